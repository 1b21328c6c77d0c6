"""The MLP kinds, one file each, and their registry ``MLP_KINDS``."""

from prism_lm.model.mlp.common import MLPKind
from prism_lm.model.mlp.gelu import GeluMLP
from prism_lm.model.mlp.ista import IstaMLP

MLP_KINDS: dict[str, type[MLPKind]] = {kind.name: kind for kind in (GeluMLP, IstaMLP)}

__all__ = ["MLP_KINDS", "GeluMLP", "IstaMLP", "MLPKind"]
