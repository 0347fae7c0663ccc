"""Where a model named on the command line comes from, decided before anything is loaded.

A name is **local** when it starts with ``.``, ``/`` or ``~``, when it exists, or when it has a path separator and
its parent folder exists (``models/bert-techer`` next to ``models/``): a local name must be a folder holding a
``config.json``; it is never sent to the hub. Any other name is a **hub** name: found in the local cache, or checked
once on the hub with a short timeout and no retries; when the hub cannot be reached the error says so at once and
advises ``hf download NAME --local-dir DIR``, instead of transformers' retries (tens of seconds per model).
"""

from __future__ import annotations

import os
from pathlib import Path

from ._common import CommandError

HUB_TIMEOUT_S = 5.0


def looks_local(name: str) -> bool:
    """Whether ``name`` is meant as a local path (see the module docstring)."""
    if name.startswith((".", "/", "~")) or os.path.isabs(name) or Path(name).expanduser().exists():
        return True
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if any(s in name for s in seps):
        parent = Path(name).expanduser().parent
        return str(parent) not in ("", ".") and parent.is_dir()
    return False


def check_model(name: str, flag: str) -> str:
    """``name`` (a local folder or hub name given as ``flag``) when it can be loaded without a long wait; raises
    :class:`CommandError` with one line saying what is wrong and what to do. A reachable hub name is returned
    as given; a name known only to the local cache, too (transformers finds it there)."""
    if looks_local(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise CommandError(f"{flag} {name!r}: no such local folder (resolved: {path.resolve()}); local paths are "
                               "never looked up on the Hugging Face hub")
        if not path.is_dir():
            raise CommandError(f"{flag} {name!r} is a file; give the model's folder (with config.json)")
        if not (path / "config.json").is_file():
            raise CommandError(f"{flag} {name!r}: the folder has no config.json, so it is not a transformers model "
                               "folder (save one with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR))")
        return name
    _check_hub(name, flag)
    return name


def _check_hub(name: str, flag: str) -> None:
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id
        raise CommandError(f"{flag} {name!r} is neither a local folder nor a valid Hugging Face hub name") from None
    if isinstance(cached, str):
        return
    advice = f"download it where the hub is reachable (`hf download {name} --local-dir DIR`) and pass {flag} DIR"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise CommandError(f"{flag} {name!r} is not a local folder and not in the Hugging Face cache, and the hub "
                           f"is offline (HF_HUB_OFFLINE); {advice}")
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(name, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return  # it exists; transformers reports the access problem with the user's token
    except RepositoryNotFoundError:
        raise CommandError(f"{flag} {name!r} is not a local folder and no such model exists on the Hugging Face "
                           "hub (or it is private); check the spelling") from None
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CommandError(f"{flag} {name!r} is not a local folder and the Hugging Face hub cannot be reached "
                           f"({reason}); {advice}") from None
