"""Hub datasets with the pinned `datasets` (hsae_utils.data.hub_data) and their local replicas
(hsae_utils.data.dataset_replicas): SAEBench's own readers read the replicas; the loaders read hub ids
through the replica switch; failures are told apart with the errors `datasets` and
`huggingface_hub` really raise (offline mode, a refused connection, a gated repository, a script
dataset, a replica with a column or a split removed)."""

import shutil
from pathlib import Path

import datasets
import huggingface_hub
import pyarrow.parquet as pq
import pytest

from hsae_utils.config import REPO_ROOT, get_profile
from hsae_utils.data import dataset_replicas, hub, hub_data
from hsae_utils.data.corpus import load_text_dataset
from hsae_utils.evals.probing_tasks import SAEBENCH_DATASETS, saebench_tasks, task_spec

from .test_hub import fake_hub  # noqa: F401 - the fixture

CORPUS = REPO_ROOT / "outputs" / "corpus"
TINY = get_profile("paper-tiny")


@pytest.fixture(scope="module")
def replica_cache(tmp_path_factory):
    if not (CORPUS / "train.jsonl").is_file():
        pytest.skip("needs the embedded corpus (python -m hsae_utils.pipeline.prepare)")
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HSAE_CACHE_DIR", str(cache))
        mp.delenv(hub.REPLICA_ENV, raising=False)
        folders = dataset_replicas.ensure_dataset_replicas(CORPUS)
        yield cache, folders


@pytest.fixture
def cache(replica_cache, monkeypatch):
    monkeypatch.setenv("HSAE_CACHE_DIR", str(replica_cache[0]))
    monkeypatch.delenv(hub.REPLICA_ENV, raising=False)
    return replica_cache


def test_replicas_are_deterministic_and_have_the_hub_layout(cache):
    _, folders = cache
    before = {r: hub.identity(r, "dataset", TINY) for r in folders}
    rebuilt = dataset_replicas.ensure_dataset_replicas(CORPUS, force=True)
    assert {r: hub.identity(r, "dataset", TINY) for r in rebuilt} == before
    owt = folders["Skylion007/openwebtext"]
    assert pq.read_schema(owt / "plain_text/train/0000.parquet").names == ["text"]
    bios = pq.read_table(folders["LabHC/bias_in_bios"] / "data/train-00000-of-00001.parquet")
    assert bios.column_names == ["hard_text", "profession", "gender"]
    assert sorted(set(bios["profession"].to_pylist())) == list(range(28))


def test_saebench_reads_the_replicas_with_its_own_code(cache):
    """SAEBench's dataset_utils (which calls load_dataset(name, ...) as on the hub) on the
    replica folders."""
    from sae_bench.sae_bench_utils import dataset_utils

    _, folders = cache
    tr, te = dataset_utils.get_ag_news_dataset(
        str(folders["fancyzhx/ag_news"]), SAEBENCH_DATASETS["fancyzhx/ag_news"], 16, 8, 42
    )
    assert sorted(tr) == ["0", "1", "2", "3"] and all(len(v) == 8 for v in tr.values())
    langs = SAEBENCH_DATASETS["Helsinki-NLP/europarl"]
    tr, te = dataset_utils.get_europarl_dataset(
        str(folders["Helsinki-NLP/europarl"]), langs, 16, 8, 42
    )
    assert sorted(tr) == sorted(langs) and all(len(v) == 4 for v in te.values())
    # github-code: a script dataset on the hub, and on the replica
    with pytest.raises(RuntimeError, match="Dataset scripts are no longer supported"):
        dataset_utils.get_github_code_dataset(
            str(folders["codeparrot/github-code"]), ["C"], 4, 2, 42
        )


def test_paper_tiny_reads_every_dataset_through_the_switch(cache):
    tasks = saebench_tasks(TINY)
    assert list(tasks) == list(SAEBENCH_DATASETS)
    for name, task in tasks.items():
        assert task.classes == SAEBENCH_DATASETS[name]
        assert len(task.train) == len(task.classes) * TINY.probe_train_per_class
    assert all("@replica:" in s for s in task_spec(TINY)["replicas"])
    validation = load_text_dataset(TINY, "validation")
    assert sum(1 for _ in validation) > 100
    assert hub_data.data_files("Skylion007/openwebtext", get_profile("paper")) == {
        "train": "hf://datasets/Skylion007/openwebtext@refs%2Fconvert%2Fparquet/"
        "plain_text/train/*.parquet"
    }


def _errors(fn):
    with pytest.raises(hub_data.HubDataError) as info:
        fn()
    return info.value


def test_offline_mode(cache, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    err = _errors(lambda: load_text_dataset(get_profile("paper"), "train"))
    assert (
        err.kind == "offline"
        and "hf download Skylion007/openwebtext --repo-type dataset --revision refs/convert/parquet"
        in str(err)
    )


def test_no_network_and_gated(cache, fake_hub):  # noqa: F811
    import httpx2

    def refuse(request):
        raise httpx2.ConnectError("[Errno -2] Name or service not known", request=request)

    fake_hub["respond"] = refuse
    err = _errors(lambda: hub_data.load_hub_dataset("hsae-tests/unreachable", split="train"))
    assert err.kind == "network" and "cannot be reached" in str(err)
    message = "Access to dataset hsae-tests/gated is restricted. You must be authenticated."
    fake_hub["respond"] = lambda request: httpx2.Response(
        401,
        headers={"X-Error-Code": "GatedRepo", "X-Error-Message": message},
        json={"error": message},
        request=request,
    )
    err = _errors(lambda: hub_data.load_hub_dataset("hsae-tests/gated", split="train"))
    assert err.kind == "gated" and "Accept its conditions" in str(err) and "HF_TOKEN" in str(err)


def test_script_dataset(cache, monkeypatch):
    monkeypatch.delitem(hub_data.SCRIPT_DATASETS, "codeparrot/github-code")
    err = _errors(lambda: hub_data.load_hub_dataset("codeparrot/github-code", TINY, split="train"))
    assert err.kind == "script" and "SCRIPT_DATASETS" in str(err)


def _damaged_replica(folders, repo_id, edit):
    """Rebuild `repo_id`'s replica from its current files with `edit(folder)` applied."""
    src = Path(folders[repo_id])
    saved = src.parent / (src.name + ".orig")
    shutil.copytree(src, saved)

    def build(tmp):
        shutil.copytree(saved, tmp, dirs_exist_ok=True)
        (tmp / hub.MANIFEST).unlink()
        edit(tmp)

    hub.write_replica(repo_id, "dataset", build, {"damaged": True})
    return lambda: (shutil.rmtree(src), saved.rename(src))


def test_missing_column_is_named_and_skipped_only_on_request(cache, capsys):
    _, folders = cache

    def drop_label(folder):
        for f in (folder / "data").glob("*.parquet"):
            pq.write_table(pq.read_table(f).drop(["label"]), f)

    restore = _damaged_replica(folders, "fancyzhx/ag_news", drop_label)
    try:
        err = _errors(lambda: saebench_tasks(TINY))
        assert err.kind == "column" and "'fancyzhx/ag_news'" in str(err) and "['label']" in str(err)
        assert "skip_unavailable_probing" in str(err)
        tasks = saebench_tasks(get_profile("paper-tiny", skip_unavailable_probing=True))
        assert "fancyzhx/ag_news" not in tasks and len(tasks) == len(SAEBENCH_DATASETS) - 1
        assert "SKIPPED fancyzhx/ag_news (column" in capsys.readouterr().out
    finally:
        restore()


def test_missing_split(cache):
    _, folders = cache
    restore = _damaged_replica(
        folders,
        "LabHC/bias_in_bios",
        lambda folder: [f.unlink() for f in (folder / "data").glob("test-*")],
    )
    try:
        err = _errors(lambda: saebench_tasks(TINY))
        assert err.kind == "split" and "no split(s) ['test']" in str(err)
        assert "LabHC/bias_in_bios_class_set1" in str(err)
    finally:
        restore()
    err = _errors(
        lambda: hub_data.load_hub_dataset(
            "Skylion007/openwebtext", TINY, split="validation", streaming=True
        )
    )
    assert err.kind == "split"


def _hub_cache_snapshot(hub_cache: Path, repo_id: str, revision: str, files_from: Path):
    """The layout `hf download --repo-type dataset --revision R` leaves in the hub cache."""
    repo = hub_cache / f"datasets--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(
        files_from, repo / "snapshots" / commit, ignore=shutil.ignore_patterns(hub.MANIFEST)
    )
    (repo / "refs" / revision).parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)


def test_offline_reads_the_pre_downloaded_hub_cache(cache, monkeypatch, tmp_path):
    """A compute node without network: the datasets downloaded into the hub cache beforehand are
    read with HF_HUB_OFFLINE=1 (the hub's script dataset through its parquet revision)."""
    _, folders = cache
    hub_cache = tmp_path / "hub"
    _hub_cache_snapshot(
        hub_cache,
        "Skylion007/openwebtext",
        hub_data.PARQUET_REVISION,
        folders["Skylion007/openwebtext"],
    )
    _hub_cache_snapshot(hub_cache, "fancyzhx/ag_news", "main", folders["fancyzhx/ag_news"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    paper = get_profile("paper")
    assert sum(1 for _ in load_text_dataset(paper, "validation")) > 100
    ds = hub_data.load_hub_dataset(
        "fancyzhx/ag_news", paper, columns=("text", "label"), splits=("train", "test")
    )
    assert ds["test"].num_rows == 4 * dataset_replicas.ROWS_PER_CLASS["test"]
    err = _errors(lambda: hub_data.load_hub_dataset("LabHC/bias_in_bios", paper))
    assert err.kind == "offline" and "hf download LabHC/bias_in_bios --repo-type dataset" in str(
        err
    )


def test_docs_list_the_download_commands():
    from hsae_utils.evals.probing_tasks import SAEBENCH_REPOS

    readme = (REPO_ROOT / "docs" / "data.md").read_text()
    for repo in ("Skylion007/openwebtext", *SAEBENCH_REPOS):
        assert hub_data.download_command(repo) in readme, repo
