"""Auditing fine-tuned models with an oracle: model organisms (`ao organism build`) and the paper's
secret-keeping, PersonaQA and model-diffing evaluations with their controls (`ao audit`).

    from activation_oracles.audit import build_organism, run_audit
    build_organism("taboo", base="smollm2-135m", out="org/moon", word="moon")
    results, out = run_audit("taboo", oracle="runs/x/adapter", organisms=["org/moon"], out="audit/moon")
"""

from ..lazy import lazy_exports

# Imported on first use (torch): `ao --help` stays fast.
__getattr__ = lazy_exports(__name__, {
    "build_organism": ".build", "AuditError": ".organism", "Organism": ".organism", "load_organism": ".organism",
    "AUDITS": ".protocols", "PROTOCOLS": ".protocols", "AuditConfig": ".run", "run_audit": ".run",
})

__all__ = ["AUDITS", "PROTOCOLS", "AuditConfig", "AuditError", "Organism", "build_organism", "load_organism",
           "run_audit"]
