"""Kubernetes' own types as the ImageClassifier API takes them: quantities, label and
annotation maps, tolerations, affinity, and the base of every model of the API."""

import re
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from kubeclassify_operator.rules import VALID_KEYS, Rule, validations


def _render_rules(schema: JsonDict, model: type[BaseModel]) -> None:
    rules: tuple[Rule[Any], ...] = getattr(model, "rules", ())
    if rules:
        schema.update(validations(*(rule.validation() for rule in rules)))


class Model(BaseModel):
    """camelCase on the wire, snake_case in Python, like every Kubernetes API; the docstring
    under each field is its description in the CRD, and each of `rules` is both a CEL rule of
    its schema and a check of the model."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        use_attribute_docstrings=True,
        json_schema_extra=_render_rules,
    )

    rules: ClassVar[tuple[Rule[Any], ...]] = ()

    @model_validator(mode="after")
    def _rules_hold(self) -> Self:
        for rule in self.rules:
            rule.check(self)
        return self


class Strict(Model):
    """Unknown keys are errors: the API server prunes them from new objects, and the operator
    refuses them in an object stored while `affinity` was still free-form."""

    model_config = ConfigDict(extra="forbid")


# The API server's own pattern for resource.Quantity, without the minus: no amount is negative.
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
_QUANTITY_PATTERN = rf"^\+?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"


def _quantity(value: int | str) -> int | str:
    """Refuse what the child's API would refuse, here where the message can name the field."""
    if isinstance(value, int) and value < 0:
        raise ValueError(f"must not be negative, got {value}")
    if isinstance(value, str) and not (len(value) <= 64 and re.match(_QUANTITY_PATTERN, value)):
        raise ValueError(f"{value!r} is not a non-negative quantity such as 500m, 2Gi or 1")
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": _QUANTITY_PATTERN,
            "maxLength": 64,
            "minimum": 0,
        }
    ),
]
"""A Kubernetes resource quantity such as `500m`, `2Gi` or `1`."""

FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""A Kubernetes object passed through verbatim (the API server validates it in the child)."""

_MAX_KEYS = 64
_LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


def _valid_label_values(labels: dict[str, str]) -> dict[str, str]:
    bad = [
        f"{k}={v}"
        for k, v in labels.items()
        if len(v) > 63 or not re.match(_LABEL_VALUE_PATTERN, v)
    ]
    if bad:
        raise ValueError(
            f"{', '.join(bad)}: a label value is at most 63 letters, digits, '-', "
            "'_' or '.', starting and ending with a letter or digit"
        )
    return labels


def _string_map(values: JsonDict) -> WithJsonSchema:
    """A map of label or annotation keys to these values, its keys checked by CEL."""
    return WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": values,
            "maxProperties": _MAX_KEYS,
            **validations(VALID_KEYS.validation()),
        }
    )


AnnotationMap = Annotated[dict[str, str], VALID_KEYS.validator(), _string_map({"type": "string"})]
"""Annotations, as on any Kubernetes object."""
LabelMap = Annotated[
    dict[str, str],
    VALID_KEYS.validator(),
    AfterValidator(_valid_label_values),
    _string_map({"type": "string", "maxLength": 63, "pattern": _LABEL_VALUE_PATTERN}),
]
"""Labels (or a node selector), as on any Kubernetes object."""


class LocalObjectReference(Model):
    """A Secret in the classifier's namespace."""

    name: str = Field(min_length=1, max_length=253)
    """Name of the Secret."""


class Toleration(Model):
    """Lets the pods run on nodes with a matching taint (as in a Pod's tolerations)."""

    key: str | None = None
    """The taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists (any value) or Equal (the value below); Kubernetes defaults to Equal."""
    value: str | None = None
    """The taint value to match with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect to tolerate; empty tolerates every effect."""
    toleration_seconds: int | None = None
    """With effect NoExecute: how long the pods stay on a node after the taint appears."""


# Scheduling: Kubernetes' own Affinity types, typed so that a misspelt key is an error (a
# free-form object would silently drop it) and so that the CRD documents them.


class NodeSelectorRequirement(Strict):
    """A requirement on a node's labels or fields."""

    key: str
    """The label (or field) key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    """How the key relates to the values."""
    values: list[str] | None = None
    """The values; non-empty for In and NotIn, one integer for Gt and Lt, empty otherwise."""


class NodeSelectorTerm(Strict):
    """Requirements that must all hold (an empty term matches no node)."""

    match_expressions: list[NodeSelectorRequirement] | None = None
    """Requirements on the node's labels."""
    match_fields: list[NodeSelectorRequirement] | None = None
    """Requirements on the node's fields."""


class NodeSelector(Strict):
    """Terms of which at least one must match."""

    node_selector_terms: list[NodeSelectorTerm]
    """The terms, ORed."""


class PreferredSchedulingTerm(Strict):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100)
    """Weight of this preference, 1-100."""
    preference: NodeSelectorTerm
    """The nodes preferred."""


class NodeAffinity(Strict):
    """Which nodes the pods may or prefer to run on."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    """Nodes the pods must run on."""
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = (
        None
    )
    """Nodes the scheduler prefers, by weight."""


class LabelSelectorRequirement(Strict):
    """A requirement on a label."""

    key: str
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: list[str] | None = None
    """The values; non-empty for In and NotIn, empty for Exists and DoesNotExist."""


class LabelSelector(Strict):
    """A label query; its requirements are ANDed, and an empty one matches everything."""

    match_labels: dict[str, str] | None = None
    """Labels that must have exactly these values."""
    match_expressions: list[LabelSelectorRequirement] | None = None
    """Requirements on the labels."""


class PodAffinityTerm(Strict):
    """Pods (selected by labels, in some namespaces) to run near, or away from."""

    label_selector: LabelSelector | None = None
    """The pods; none when unset."""
    namespace_selector: LabelSelector | None = None
    """Namespaces to look in, by label (added to namespaces)."""
    namespaces: list[str] | None = None
    """Namespaces to look in, by name; the classifier's when both this and
    namespaceSelector are unset."""
    topology_key: str = Field(min_length=1)
    """The node label that defines "near", e.g. kubernetes.io/hostname or
    topology.kubernetes.io/zone."""
    match_label_keys: list[str] | None = None
    """Label keys whose values, taken from the incoming pod, are added to labelSelector."""
    mismatch_label_keys: list[str] | None = None
    """Label keys whose values, taken from the incoming pod, must differ."""


class WeightedPodAffinityTerm(Strict):
    """A weighted pod (anti-)affinity preference."""

    weight: int = Field(ge=1, le=100)
    """Weight of this preference, 1-100."""
    pod_affinity_term: PodAffinityTerm
    """The pods."""


class PodAffinity(Strict):
    """Pods to run near (same node, zone, ...)."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    """Terms that must all hold."""
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        None
    )
    """Terms the scheduler prefers, by weight."""


class PodAntiAffinity(Strict):
    """Pods to run away from (another node, zone, ...)."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    """Terms that must all hold."""
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        None
    )
    """Terms the scheduler prefers, by weight."""


class Affinity(Strict):
    """Scheduling constraints of the pods, as in a Pod's affinity."""

    node_affinity: NodeAffinity | None = None
    """Which nodes the pods may or prefer to run on."""
    pod_affinity: PodAffinity | None = None
    """Which pods to run near."""
    pod_anti_affinity: PodAntiAffinity | None = None
    """Which pods to run away from."""
