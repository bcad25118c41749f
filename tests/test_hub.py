"""Hub push/pull through the real huggingface_hub code against a loopback Hub (tests/hub_server.py)."""

from pathlib import Path

import pytest
import torch

from automoe.checkpoint import CheckpointError
from automoe.hub import HubError, pull, push
from automoe.modeling import MoETransformer
from automoe.random_model import save_random_model
from automoe.serve import Translator

from hub_server import HubServer

DATA = Path(__file__).parent / "data" / "bible-en-de"
TOKEN = "hf_loopback_test_token"
SENTENCES = ["In the beginning God created the heavens and the earth.", "Jesus wept."]


def _tiny_arch():
    from automoe.config import SearchSpace

    return SearchSpace.preset("tiny").largest().replace(
        vocab_size=1000, encoder_ffn=((40, 8), (24,), (8, 40)), max_positions=24)


def _save(path: Path, seed: int) -> Path:
    return save_random_model(_tiny_arch(), path, seed=seed, tokenizer_file=DATA / "spm.model", card="# tiny\n")


def _translate(path_or_repo, **kw) -> list[str]:
    return Translator.from_pretrained(path_or_repo, **kw).translate(SENTENCES, beam=2, max_length=8)


def _same_weights(a: MoETransformer, b: MoETransformer) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _set_offline(monkeypatch, offline: bool) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", offline)


@pytest.fixture
def hub(monkeypatch, tmp_path, request):
    """A loopback Hub; HF_ENDPOINT/HF_TOKEN point at it, online mode, an empty default cache.
    Requests of up to 64 MB, or the size a test names with `@pytest.mark.hub_body_mb(N)`."""
    import huggingface_hub.constants as hf_constants

    mark = request.node.get_closest_marker("hub_body_mb")
    limit = (mark.args[0] if mark else 64) << 20
    with HubServer(token=TOKEN, max_lifetime_s=120, max_body_bytes=limit) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
        _set_offline(monkeypatch, False)
        yield server


def test_push_pull_from_pretrained_and_revision_pin(hub, tmp_path):
    folder = _save(tmp_path / "tiny", seed=0)
    first = push(folder, "automoe/tiny")
    assert len(first) == 40 and hub.repos["automoe/tiny"].branches["main"] == first

    cache = tmp_path / "cache"
    pulled = pull("automoe/tiny", cache_dir=cache)
    assert pulled.is_relative_to(cache) and pulled.name == first
    for name in ("config.json", "model.safetensors", "spm.model", "README.md"):
        assert (pulled / name).read_bytes() == (folder / name).read_bytes(), name
    local_a = MoETransformer.from_pretrained(folder)
    assert _same_weights(MoETransformer.from_pretrained("automoe/tiny", cache_dir=cache), local_a)
    out_a = _translate(folder)
    assert _translate("automoe/tiny") == out_a  # default HF cache, through Translator

    _save(folder, seed=1)  # same architecture, new weights
    second = push(folder, "automoe/tiny", commit_message="retrained")
    assert second != first
    commit = hub.repos["automoe/tiny"].commits[second]
    assert commit.parent == first and commit.title == "retrained"
    latest = MoETransformer.from_pretrained("automoe/tiny", cache_dir=cache)
    assert _same_weights(latest, MoETransformer.from_pretrained(folder))
    assert not _same_weights(latest, local_a)
    pinned = MoETransformer.from_pretrained("automoe/tiny", revision=first, cache_dir=cache)
    assert _same_weights(pinned, local_a)
    assert _translate("automoe/tiny", revision=first) == out_a
    assert _translate("automoe/tiny") == _translate(folder)

    local = pull("automoe/tiny", revision=first, local_dir=tmp_path / "local")
    assert local == (tmp_path / "local").resolve()
    assert _same_weights(MoETransformer.from_pretrained(local), local_a)

    with pytest.raises(CheckpointError, match="not found on the Hub"):
        pull("automoe/tiny", revision="0" * 40, cache_dir=cache)
    with pytest.raises(CheckpointError, match="not found on the Hub"):
        pull("automoe/missing", cache_dir=cache)


def test_pickle_only_repo_is_refused(hub, tmp_path):
    from huggingface_hub import HfApi

    bad = tmp_path / "pickled"
    bad.mkdir()
    (bad / "config.json").write_text('{"architectures": ["MarianMTModel"]}')
    torch.save({"w": torch.zeros(2)}, bad / "pytorch_model.bin")
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo("someone/pickled")
    api.upload_folder(repo_id="someone/pickled", folder_path=bad)
    assert "pytorch_model.bin" in api.list_repo_files("someone/pickled")

    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match=r"only pickled weights \['pytorch_model.bin'\].*safetensors only"):
        pull("someone/pickled", cache_dir=cache)
    with pytest.raises(CheckpointError, match="only pickled weights"):
        MoETransformer.from_pretrained("someone/pickled", cache_dir=cache)
    assert not list(cache.rglob("*.bin")), "a pickle was downloaded"


def test_offline_cached_load(hub, tmp_path, monkeypatch):
    folder = _save(tmp_path / "tiny", seed=0)
    first = push(folder, "automoe/tiny")
    cache = tmp_path / "cache"
    online = pull("automoe/tiny", cache_dir=cache)
    hub.stop()  # nothing can be reached from here on

    _set_offline(monkeypatch, True)
    assert pull("automoe/tiny", cache_dir=cache) == online
    assert pull("automoe/tiny", revision=first, cache_dir=cache) == online
    model = MoETransformer.from_pretrained("automoe/tiny", cache_dir=cache)
    assert _same_weights(model, MoETransformer.from_pretrained(folder))
    with pytest.raises(CheckpointError, match="not in the local Hub cache.*HF_HUB_OFFLINE is set"):
        pull("automoe/never-pulled", cache_dir=cache)


def test_private_repo_branch_and_token(hub, tmp_path, monkeypatch):
    folder = _save(tmp_path / "tiny", seed=0)
    commit = push(folder, "automoe/private-tiny", private=True, revision="dev")
    repo = hub.repos["automoe/private-tiny"]
    assert repo.private and repo.branches["dev"] == commit and repo.branches["main"] != commit
    cache = tmp_path / "cache"
    assert (pull("automoe/private-tiny", revision="dev", cache_dir=cache) / "model.safetensors").is_file()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        pull("automoe/private-tiny", cache_dir=cache)  # main holds only .gitattributes
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token either
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    with pytest.raises(CheckpointError, match="private repos need HF_TOKEN"):
        pull("automoe/private-tiny", revision="dev", cache_dir=tmp_path / "cache2")
    with pytest.raises(HubError, match=r"could not push .* \(is HF_TOKEN set.*401 Unauthorized"):
        push(folder, "automoe/no-token")


def test_push_refuses_non_model_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="not a model folder: config.json and model.safetensors missing"):
        push(empty, "automoe/x")
    with pytest.raises(CheckpointError, match="no such folder"):
        push(tmp_path / "nope", "automoe/x")
    folder = _save(tmp_path / "tiny", seed=0)
    torch.save({"step": 1}, folder / "optimizer.pt")
    with pytest.raises(CheckpointError, match=r"pickled files \['optimizer.pt'\]"):
        push(folder, "automoe/x")
    (folder / "optimizer.pt").unlink()
    (folder / "config.json").write_text('{"architectures": ["MarianMTModel"]}')
    with pytest.raises(CheckpointError, match="not an automoe model config"):
        push(folder, "automoe/x")
    with pytest.raises(ValueError, match="must have the form 'org/name'"):
        push(folder, "no-namespace")


def test_pulled_files_are_verified(hub, tmp_path, monkeypatch):
    """A file that changed in the Hub cache after the download (a bad disk, a hand edit) is caught
    by pull and by from_pretrained, naming it; push refuses a corrupt folder."""
    from automoe.artifacts import IntegrityError

    folder = _save(tmp_path / "tiny", seed=0)
    push(folder, "automoe/tiny")
    cache = tmp_path / "cache"
    pulled = pull("automoe/tiny", cache_dir=cache)
    blob = (pulled / "model.safetensors").resolve()  # the cache keeps files as blobs behind links
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    _set_offline(monkeypatch, True)
    with pytest.raises(IntegrityError, match="model.safetensors is corrupt or was changed"):
        pull("automoe/tiny", cache_dir=cache)
    with pytest.raises(IntegrityError, match="model.safetensors is corrupt or was changed"):
        MoETransformer.from_pretrained("automoe/tiny", cache_dir=cache)
    assert pull("automoe/tiny", cache_dir=cache, verify=False) == pulled
    (folder / "spm.model").write_bytes(b"not a tokenizer")
    with pytest.raises(IntegrityError, match="spm.model is corrupt or was changed"):
        push(folder, "automoe/tiny")


SHIPPED = sorted(d for d in (Path(__file__).resolve().parents[1] / "models").iterdir()
                 if (d / "config.json").is_file() and (d / "model.safetensors").is_file())


@pytest.mark.hub_body_mb(256)  # the loopback takes files inline (no LFS): a 91 MB model is one 122 MB request
@pytest.mark.parametrize("folder", SHIPPED, ids=[d.name for d in SHIPPED])
def test_every_shipped_model_folder_pushes_and_pulls_as_it_is(hub, tmp_path, folder):
    """Each model folder in models/ goes to the Hub and comes back byte for byte, card, shortlist
    and all, and translates the same from the repo id as from the folder."""
    repo = f"automoe/{folder.name}"
    push(folder, repo)
    pulled = pull(repo, cache_dir=tmp_path / "cache")
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert sorted(p.relative_to(pulled) for p in pulled.rglob("*") if p.is_file()) == files
    for name in files:
        assert (pulled / name).read_bytes() == (folder / name).read_bytes(), name
    kw = {"beam": 1, "max_length": 8}
    assert Translator.from_pretrained(repo).translate(SENTENCES, **kw) == \
        Translator.from_pretrained(folder).translate(SENTENCES, **kw)
