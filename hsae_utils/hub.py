"""The one error message for anything the Hugging Face hub could not give (no network, a gated
repository without a token, a renamed dataset): what failed, why it needs the hub, what to do."""
from __future__ import annotations

TOKEN_ADVICE = "for gated repositories, `huggingface-cli login` or HF_TOKEN"
OFFLINE = ("use the `local` profile (./run_all.sh --profile local): it runs on the embedded "
           "model and corpus, built from package data")


def hub_error(what: str, err: BaseException, why: str, token: bool = True,
              offline: str = OFFLINE) -> RuntimeError:
    """A RuntimeError to raise `from err` when loading `what` from the hub failed."""
    access = "network access to the hub" + (f" (and, {TOKEN_ADVICE})" if token else "")
    return RuntimeError(f"Could not load {what} from the Hugging Face hub ({type(err).__name__}: "
                        f"{err}). {why} That needs {access}. Without the hub, {offline}.")
