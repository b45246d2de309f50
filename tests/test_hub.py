"""hsae_utils.data.hub (the switch from hub ids to local replicas) and the model-loading errors, told
apart with the exceptions huggingface_hub really raises (offline mode; a fake hub answering
through httpx's MockTransport with the hub's own gated-repository response; a refused
connection)."""

import shutil

import huggingface_hub
import pytest

from hsae_utils.config import get_profile
from hsae_utils.data import hub
from hsae_utils.data.model import load_model, model_fingerprint
from hsae_utils.data.tiny_gemma import REPO_ID

from .conftest import GEMMA_VOCAB


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HSAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(hub.REPLICA_ENV, raising=False)
    return tmp_path / "cache"


def _copy_build(src):
    return lambda tmp: [shutil.copy(f, tmp / f.name) for f in src.iterdir()]


def test_switch_resolves_ids_to_replica_folders(cache, monkeypatch, tiny_gemma_dir):
    tiny = get_profile("paper-tiny")
    assert hub.resolve(REPO_ID, "model", get_profile("paper")) == REPO_ID
    with pytest.raises(
        FileNotFoundError,
        match="replica .*google/gemma-2-2b.* missing.*prepare --profile paper-tiny",
    ):
        hub.resolve(REPO_ID, "model", tiny)
    folder = hub.write_replica(REPO_ID, "model", _copy_build(tiny_gemma_dir), {"v": 1})
    assert folder == cache / "hub-replica" / "models" / "google" / "gemma-2-2b"
    assert hub.resolve_model(REPO_ID, tiny) == str(folder)
    assert hub.replica_folder("Skylion007/openwebtext", "dataset") == (
        cache / "hub-replica" / "datasets" / "Skylion007" / "openwebtext"
    )
    monkeypatch.setenv(hub.REPLICA_ENV, "0")
    assert hub.resolve(REPO_ID, "model", tiny) == REPO_ID
    monkeypatch.setenv(hub.REPLICA_ENV, "1")
    assert hub.resolve(REPO_ID, "model", get_profile("paper")) == str(folder)
    monkeypatch.setenv(hub.REPLICA_ENV, "maybe")
    with pytest.raises(ValueError, match="HSAE_HUB_REPLICA='maybe'"):
        hub.resolve(REPO_ID)


def test_damaged_or_outdated_replica_is_refused_then_rebuilt(cache, tiny_gemma_dir):
    builds = []

    def build(tmp):
        builds.append(1)
        _copy_build(tiny_gemma_dir)(tmp)

    folder = hub.write_replica(REPO_ID, "model", build, {"v": 1})
    assert hub.write_replica(REPO_ID, "model", build, {"v": 1}) == folder and len(builds) == 1
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(FileNotFoundError, match=r"damaged \(model.safetensors"):
        hub.resolve(REPO_ID, "model", get_profile("paper-tiny"))
    hub.write_replica(REPO_ID, "model", build, {"v": 1})
    assert len(builds) == 2 and hub.replica_status(folder, {"v": 1}) == (True, "ok")
    hub.write_replica(REPO_ID, "model", build, {"v": 2})  # another recipe: rebuilt
    assert len(builds) == 3 and not list(folder.parent.glob(".*"))  # no temporaries left


def test_paper_tiny_loads_the_replica_through_the_hub_id_path(cache, tiny_gemma_dir):
    hub.write_replica(REPO_ID, "model", _copy_build(tiny_gemma_dir), {"v": 1})
    P = get_profile("paper-tiny")
    model = load_model(P, device="cpu")
    assert model.cfg.d_vocab == GEMMA_VOCAB and model.cfg.output_logits_soft_cap == 3.0
    assert model.tokenizer("a b")["input_ids"][0] == model.tokenizer.bos_token_id == 2
    assert model_fingerprint(P).startswith(f"{REPO_ID}@replica:")
    (hub.replica_folder(REPO_ID) / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        load_model(P, device="cpu")


# ------------------------------------------------------------------ hub errors, told apart


def _hub_profile(name):
    """A hub profile for a repository id that no hub cache anywhere holds."""
    return get_profile("paper", model_name=name, device="cpu")


def test_offline_mode_without_a_cached_copy(cache, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="offline mode .*HF_HUB_OFFLINE.*hf download"):
        load_model(_hub_profile("hsae-tests/never-cached"))


@pytest.fixture
def fake_hub(monkeypatch):
    """Route huggingface_hub's HTTP client through httpx's MockTransport; `respond` is set by the
    test."""
    import httpx2
    from huggingface_hub.utils import _http

    state = {}
    monkeypatch.setattr(_http.time, "sleep", lambda s: None)  # no retry back-off in tests
    huggingface_hub.set_client_factory(
        lambda: httpx2.Client(transport=httpx2.MockTransport(lambda r: state["respond"](r)))
    )
    yield state
    huggingface_hub.set_client_factory(_http.default_client_factory)


def test_gated_model_without_licence_or_token(cache, fake_hub):
    import httpx2

    message = (
        "Access to model hsae-tests/gated is restricted. You must have access to it and "
        "be authenticated to access it. Please log in."
    )
    fake_hub["respond"] = lambda request: httpx2.Response(
        401,
        headers={"X-Error-Code": "GatedRepo", "X-Error-Message": message},
        json={"error": message},
        request=request,
    )
    with pytest.raises(RuntimeError, match="gated model.*Accept the licence.*HF_TOKEN"):
        load_model(_hub_profile("hsae-tests/gated"))


def test_no_network(cache, fake_hub):
    import httpx2

    def refuse(request):
        raise httpx2.ConnectError("[Errno -2] Name or service not known", request=request)

    fake_hub["respond"] = refuse
    with pytest.raises(RuntimeError, match="hub cannot be reached .*no network"):
        load_model(_hub_profile("hsae-tests/unreachable"))
