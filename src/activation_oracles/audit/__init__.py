"""Auditing fine-tuned models with an oracle: model organisms (`ao organism build`) and the paper's
secret-keeping, PersonaQA and model-diffing evaluations with their controls (`ao audit`).

    from activation_oracles.audit import build_organism, run_audit
    build_organism("taboo", base="smollm2-135m", out="org/moon", word="moon")
    results, out = run_audit("taboo", oracle="runs/x/adapter", organisms=["org/moon"], out="audit/moon")
"""

from .build import build_organism
from .organism import AuditError, Organism, load_organism
from .protocols import AUDITS, PROTOCOLS
from .run import AuditConfig, run_audit

__all__ = ["AUDITS", "PROTOCOLS", "AuditConfig", "AuditError", "Organism", "build_organism", "load_organism",
           "run_audit"]
