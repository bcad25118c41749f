"""automoe.serve: the Translator API over inference engines (and the Gradio demo)."""

from .translator import RoutedTranslation, Translator

__all__ = ["RoutedTranslation", "Translator"]
