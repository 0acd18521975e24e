import importlib.util
import os
from pathlib import Path

import pytest

from scratchgpt.book.tokenizer import GPT2Tokenizer
from scripted_server import ScriptedServer

ROOT = Path(__file__).resolve().parents[1]

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach the Hugging Face Hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Resume checkpoints and downloaded weights go to a scratch cache, never the user's."""
    os.environ["SCRATCHGPT_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def load_stage(name):
    """The module of the stage script ``stages/<name>.py``."""
    spec = importlib.util.spec_from_file_location(f"stages.{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_stage():
    """``run_stage(name, params)``: the ``main`` of ``stages/<name>.py`` inside a session of the
    dvc.yaml stage ``name`` (params restricted to what it declares, outputs committed when it
    returns), run in the current folder with the repository's code linked into it."""
    from scratchgpt.plumbing import stage

    def run(name, params):
        for code in ("stages", "src"):  # deps (and so fingerprints) are read relative to the working folder
            if not Path(code).exists():
                Path(code).symlink_to(ROOT / code)
        with stage.session(name, params, dvc_yaml=ROOT / "dvc.yaml") as st:
            return load_stage(name.partition("@")[0]).main(st)

    return run


@pytest.fixture
def server():
    with ScriptedServer() as s:
        yield s


class Sleeps(list):
    """A stand-in for time.sleep that records what the code under test would have waited."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The read-only data mirror ($SCRATCHGPT_MIRROR, else ../shared/data beside the repo)."""
    path = Path(os.environ.get("SCRATCHGPT_MIRROR") or ROOT.parent / "shared" / "data").resolve()
    if not (path / "the-verdict.txt").is_file():
        message = f"no data mirror at {path}: set SCRATCHGPT_MIRROR to a folder holding the data files"
        if os.environ.get("SCRATCHGPT_REQUIRE_MIRROR"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def tok(mirror):
    """GPT-2's tokenizer, from the data mirror."""
    return GPT2Tokenizer(mirror / "gpt2")


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, which writes OpenAI's checkpoints (imported only by the tests that ask)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow

    return tensorflow


@pytest.fixture(scope="session")
def transformers():
    """Hugging Face transformers, the reference the conversions are checked against."""
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


@pytest.fixture
def hub(tmp_path, monkeypatch, transformers, mirror):
    """A Hugging Face Hub on 127.0.0.1 (tests/hub_server.py) serving a tiny GPT-2 as
    hub_server.REPO at hub_server.COMMIT (its files in tmp_path/hub-repo); huggingface_hub
    pointed at it through HF_ENDPOINT, with its own cache and a token from the environment."""
    from huggingface_hub import constants

    from hub_server import COMMIT, REPO, FakeHub, gpt2_folder

    fake = FakeHub()
    fake.add(REPO, COMMIT, gpt2_folder(transformers, mirror, tmp_path / "hub-repo"))
    monkeypatch.setenv("HF_ENDPOINT", fake.start())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # every other test stays off the Hub
    yield fake
    fake.stop()
