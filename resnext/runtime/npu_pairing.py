"""Which torch a torch_npu was built for, checked before torch_npu is imported.

Each torch_npu wheel is built against one torch release and declares it (torch_npu 2.14.0 says
`Requires-Dist: torch==2.14.0.*`). Imported next to another torch it fails deep inside its C++
extension (undefined symbols) or, worse, half works; so `launch.plan` compares the pair from package
metadata alone and refuses a mismatch with the pip line that fixes it. A torch_npu without metadata
(a source build on PYTHONPATH) is checked after import by its `__version__`, which follows torch's.
"""
from __future__ import annotations

from importlib import metadata
from types import ModuleType
from typing import Optional

import torch
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version


def torch_release(version: Optional[str] = None) -> str:
    """'2.14.1+cu130' -> '2.14.1': the public release that torch_npu pins against (default: this torch)."""
    return Version(version or torch.__version__).base_version


def declared_torch_pin() -> Optional[str]:
    """The installed torch_npu's torch requirement, e.g. 'torch==2.14.0.*'; None without metadata."""
    try:
        requires = metadata.requires("torch_npu") or []
    except metadata.PackageNotFoundError:
        return None
    for line in requires:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.name == "torch" and requirement.marker is None:
            return f"torch{requirement.specifier}"
    return None


def pin_for_version(npu_version: str) -> Optional[str]:
    """torch_npu X.Y.Z[.postN] is built for torch X.Y.Z: the pin a torch_npu without metadata implies."""
    try:
        return f"torch=={Version(npu_version).base_version}.*"
    except InvalidVersion:
        return None


def pairing_problem(pin: Optional[str], npu_version: Optional[str], torch_version: Optional[str] = None
                    ) -> Optional[str]:
    """None when torch `torch_version` (default: this one) satisfies torch_npu's `pin`; else the refusal."""
    if pin is None:
        return None
    torch_version = torch_version or torch.__version__
    requirement = Requirement(pin)
    release = torch_release(torch_version)
    if requirement.specifier.contains(release, prereleases=True):
        return None
    which = f"torch_npu {npu_version}" if npu_version else "the installed torch_npu"
    return (f"device.type=npu: {which} is built for {pin} but torch {torch_version} is installed; a mismatched "
            f"pair fails inside torch_npu's extension. Install the torch it was built for (the CPU build: "
            f"torch_npu refuses a CUDA torch): pip install \"{pin}\" --index-url https://download.pytorch.org/whl/cpu"
            f" -- or a torch-npu release built for torch {release}, if Ascend publishes one")


def installed_pairing_problem() -> Optional[str]:
    """The pair on this machine, from metadata (no import); None when it fits or torch_npu has no metadata."""
    try:
        npu_version = metadata.version("torch_npu")
    except metadata.PackageNotFoundError:
        return None
    return pairing_problem(declared_torch_pin(), npu_version)


def imported_pairing_problem(torch_npu: ModuleType) -> Optional[str]:
    """After import, for a torch_npu without metadata (a source build): its __version__ follows torch's."""
    version = getattr(torch_npu, "__version__", None)
    if declared_torch_pin() is not None or not version:
        return None  # checked from metadata before the import, or nothing to check against
    return pairing_problem(pin_for_version(str(version)), str(version))
