"""Names of the two supported CPU architectures in each vocabulary that needs one.

`Arch` is the runner's own name (`x64`, `arm64`): the config value and the runner tarball's.
"""

from __future__ import annotations

from typing import Final, Literal

Arch = Literal["x64", "arm64"]
ARCHES: Final[tuple[Arch, ...]] = ("x64", "arm64")

# `uname -m` on a host of that arch (preflight compares it).
UNAME_ARCH: Final[dict[str, str]] = {"x64": "x86_64", "arm64": "aarch64"}
# The Go arch name node_exporter's release tarballs use.
GO_ARCH: Final[dict[str, str]] = {"x64": "amd64", "arm64": "arm64"}
# The label the runner adds by itself (GitHub compares labels case-insensitively).
ARCH_LABEL: Final[dict[str, str]] = {"x64": "X64", "arm64": "ARM64"}
