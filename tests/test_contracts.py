"""Adding a model family is one registration (`contracts.Family` and `FAMILY_KINDS`) plus its
model code: the lists that cannot import Python — the DVC pipeline, the AsyncAPI document —
are checked against it here, and the Serve graph derives its deployments from it."""

from __future__ import annotations

from pathlib import Path

import yaml

from contracts import DEFAULT_FAMILY, FAMILIES, FAMILY_KINDS, MEMBERS
from serving.replicas import DEPLOYMENTS, EnsembleForecaster, deployment_name

ROOT = Path(__file__).resolve().parents[1]


def test_the_dvc_pipeline_trains_every_member_family() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["train"]["foreach"] == list(MEMBERS)


def test_the_asyncapi_document_offers_every_family_and_the_default() -> None:
    spec = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    subscribe = spec["components"]["messages"]["subscribePredictions"]
    model = subscribe["payload"]["properties"]["model"]
    assert model == {"enum": list(FAMILIES), "default": DEFAULT_FAMILY}


def test_every_family_has_a_deployment_of_its_kind() -> None:
    assert list(DEPLOYMENTS) == list(FAMILIES)
    for family, deployment in DEPLOYMENTS.items():
        assert deployment.name == deployment_name(family)
        cls = deployment.func_or_class
        assert cls.family == family
        assert cls.runs_networks == (FAMILY_KINDS[family] == "network")  # no torch otherwise
        assert issubclass(cls, EnsembleForecaster) == (FAMILY_KINDS[family] == "ensemble")
