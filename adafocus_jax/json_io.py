"""The one atomic JSON writer: results, benchmark tables, best-evaluation records.

    write_json(path, payload)                         # process 0 only; readers never see half a file
    write_json(path, payload, strict=True, sort_keys=True)   # NaN/Inf -> null, keys sorted

The file is written next to `path` as `path + ".tmp"` and renamed into place (`os.replace`), so a
run killed at any moment leaves the previous file or the new one, never a truncated one. Only
process 0 writes (every process may call it).
"""

import json
import math
import os
from typing import Any, Mapping

import jax


def json_safe(x: Any) -> Any:
    """NaN/Inf → None, recursively (strict JSON has no NaN; e.g. "map" when the metric is top-1)."""
    if isinstance(x, Mapping):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str, payload: Mapping, *, strict: bool = False,
               sort_keys: bool = False) -> None:
    """Writes `payload` to `path` atomically (indent 2) on process 0; a no-op on the others.

    Args:
      path: the file.
      payload: a JSON-serialisable mapping.
      strict: write NaN/Inf as null (`json_safe`) and refuse any left (`allow_nan=False`); otherwise
        Python's json writes them as the non-standard NaN / Infinity.
      sort_keys: sort every mapping's keys.
    """
    if jax.process_index() != 0:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        if strict:
            json.dump(json_safe(payload), f, indent=2, sort_keys=sort_keys, allow_nan=False)
        else:
            json.dump(payload, f, indent=2, sort_keys=sort_keys)
    os.replace(tmp, path)
