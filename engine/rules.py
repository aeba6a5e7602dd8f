"""Loading the user's rule modules (`rules/<name>.py` or `rules/<pkg>/<mod>.py`) by `module:attribute`."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

_loading = threading.RLock()


def load_rule(rules_dir: Path, ref: str, key: str) -> Any:
    """Resolve `module.sub:attr` under `rules_dir`; errors name the config key and what exists."""
    if ":" not in ref:
        raise ConfigError(key, [f"`{key}` = {ref!r} must be `module:name`, e.g. \"orders:OrdersSchema\""])
    module_name, attr = ref.split(":", 1)
    rel = Path(*module_name.split("."))
    candidates = [rules_dir / rel.with_suffix(".py"), rules_dir / rel / "__init__.py"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ConfigError(key, [f"`{key}`: no module {module_name!r} in {rules_dir} (looked for "
                                f"{', '.join(str(c.relative_to(rules_dir)) for c in candidates)})"])
    qualified = "engine_rules." + module_name
    with _loading:  # partitions load rules from several threads: none may see a half-executed module
        module = sys.modules.get(qualified)
        if module is None or getattr(module, "__file__", None) != str(path):
            spec = importlib.util.spec_from_file_location(qualified, path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[qualified] = module
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_")]
        raise ConfigError(key, [f"`{key}`: {path} has no {attr!r}; it defines: {', '.join(public)}"])
    return getattr(module, attr)
