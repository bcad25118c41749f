"""automoe: find fast sparse Mixture-of-Experts translation models and ship them for CPU inference."""

from .config import ArchConfig, ConfigError, SearchSpace

__version__ = "0.1.0"

__all__ = ["ArchConfig", "ConfigError", "SearchSpace", "MoETransformer", "SuperTransformer",
           "extract_subnet", "Translator", "__version__"]


def __getattr__(name):
    # Heavy (torch) classes are imported on first use so `import automoe` stays light.
    if name == "MoETransformer":
        from .modeling import MoETransformer
        return MoETransformer
    if name == "SuperTransformer":
        from .supernet import SuperTransformer
        return SuperTransformer
    if name == "Translator":
        from automoe.serve import Translator
        return Translator
    if name == "extract_subnet":
        from .extract import extract_subnet
        return extract_subnet
    raise AttributeError(f"module 'automoe' has no attribute {name!r}")
