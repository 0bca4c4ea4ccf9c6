"""DP-SGD aggregation mechanisms: clipped per-example gradients in, one private update out."""

from dlens_tf.privacy.mechanisms.base import ADJACENCIES, Mechanism
from dlens_tf.privacy.mechanisms.gaussian import GaussianMechanism
from dlens_tf.privacy.mechanisms.lowrank import LowRankMechanism
from dlens_tf.privacy.mechanisms.sparsify import RandKMechanism, TopKMechanism
from dlens_tf.privacy.mechanisms.topagg_sgd import TopAggMechanism

MECHANISMS = {m.name: m for m in (GaussianMechanism, TopAggMechanism, TopKMechanism, RandKMechanism, LowRankMechanism)}


def get(mechanism, **kwargs):
    """A mechanism from its name ("gaussian", "topagg", "topk", "randk", "lowrank") and arguments."""
    if isinstance(mechanism, Mechanism):
        if kwargs:
            raise ValueError(f"Pass arguments to the mechanism's constructor, not with an instance. Received: {sorted(kwargs)}")
        return mechanism
    if mechanism not in MECHANISMS:
        raise ValueError(
            f"Received an invalid value for `mechanism`, expected one of {tuple(MECHANISMS)} or a Mechanism. "
            f"Received: mechanism={mechanism!r}"
        )
    return MECHANISMS[mechanism](**kwargs)


__all__ = [
    "ADJACENCIES", "MECHANISMS", "GaussianMechanism", "LowRankMechanism", "Mechanism", "RandKMechanism",
    "TopAggMechanism", "TopKMechanism", "get",
]
