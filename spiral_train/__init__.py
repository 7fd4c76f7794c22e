"""spiral_train: self-play training of LLMs with Role-conditioned Advantage Estimation."""

from spiral_train.rae import RoleBaselines

__all__ = ["RoleBaselines"]
