"""C2PA Content Credentials with `c2pa-python`: build, sign and verify a manifest for one encoded image.

The signer is the user's: a PEM certificate chain (end-entity first, then its CA) and its PEM private key,
named by config keys (`c2pa_cert`, `c2pa_key`, `c2pa_alg`) or environment variables (PORTRAITFORGE_C2PA_CERT,
PORTRAITFORGE_C2PA_KEY, PORTRAITFORGE_C2PA_ALG). Without one, outputs carry no manifest and the run says so.
Ingredients (target, identity sources, drafts) are recorded as sha256 digests only: the identity's photos are
never embedded (a C2PA ingredient added from a stream would carry a thumbnail of it).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from portraitforge.errors import BadInputError, ModelUnavailableError

CERT_ENV = "PORTRAITFORGE_C2PA_CERT"
KEY_ENV = "PORTRAITFORGE_C2PA_KEY"
ALG_ENV = "PORTRAITFORGE_C2PA_ALG"
ALGORITHMS = ("es256", "ps256")
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED = IPTC + "trainedAlgorithmicMedia"  # a generated draft: the model made every pixel
COMPOSITE = IPTC + "compositeWithTrainedAlgorithmicMedia"  # a photo (or draft) with a model-made face
ASSERTION = "org.portraitforge.provenance"  # our own assertion: output id, ingredient and model hashes

Validation = Literal["valid", "invalid", "missing"]


@dataclass(frozen=True)
class SignerConfig:
    cert_chain: Path
    private_key: Path
    alg: str = "es256"

    @classmethod
    def resolve(cls, cert: str | None = None, key: str | None = None, alg: str | None = None) -> SignerConfig | None:
        """Config keys win over environment variables; None when neither names a certificate and key."""
        cert = cert or os.environ.get(CERT_ENV) or None
        key = key or os.environ.get(KEY_ENV) or None
        alg = (alg or os.environ.get(ALG_ENV) or "es256").lower()
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise BadInputError(
                f"C2PA signing needs both a certificate chain and a private key ({CERT_ENV}, {KEY_ENV})"
            )
        if alg not in ALGORITHMS:
            raise BadInputError(f"C2PA algorithm '{alg}' is not supported (use es256 or ps256)")
        return cls(Path(cert).expanduser(), Path(key).expanduser(), alg)

    def describe(self) -> str:
        return f"{self.alg} {self.cert_chain}"


@dataclass(frozen=True)
class ManifestFacts:
    """What the manifest states about one output."""

    title: str
    operation: str  # generate | swap | batch | ui
    composite: bool  # True when a face was swapped in (compositeWithTrainedAlgorithmicMedia)
    output_id: str
    software_version: str
    watermark: bool
    ingredients: list[dict[str, str]] = field(default_factory=list)  # {"role", "sha256", optional "title"}
    models: dict[str, str] = field(default_factory=dict)  # model name/file -> sha256 (or fingerprint)
    parameters: dict[str, Any] = field(default_factory=dict)

    def definition(self, mime: str) -> dict[str, Any]:
        agent = {"name": "portraitforge", "version": self.software_version}
        action: dict[str, Any] = {
            "action": "c2pa.created",
            "digitalSourceType": COMPOSITE if self.composite else TRAINED,
            "softwareAgent": agent,
            "description": f"portraitforge {self.operation}",
        }
        if self.parameters:
            action["parameters"] = self.parameters
        own = {
            "output_id": self.output_id,
            "operation": self.operation,
            "watermark": "portraitforge-chroma-qim-v0" if self.watermark else "off",
            "ingredients": self.ingredients,
            "models": self.models,
        }
        return {
            "claim_generator_info": [agent],
            "title": self.title,
            "format": mime,
            "assertions": [
                {"label": "c2pa.actions.v2", "data": {"actions": [action]}},
                {"label": ASSERTION, "data": own},
            ],
        }


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError:
        raise ModelUnavailableError("C2PA credentials need the c2pa-python package (pip install c2pa-python)") from None
    return c2pa


@dataclass
class Signer:
    """A loaded signer; building it reads the PEM files once per run, not once per image."""

    config: SignerConfig
    _native: Any = None
    _context: Any = None

    def native(self) -> Any:
        if self._native is None:
            c2pa = _c2pa()
            try:
                chain = self.config.cert_chain.read_bytes()
                key = self.config.private_key.read_bytes()
            except OSError as exc:
                raise BadInputError(f"C2PA signer: cannot read {exc.filename}: {exc.strerror}") from None
            try:
                self._native = c2pa.Signer.from_info(c2pa.C2paSignerInfo(self.config.alg.encode(), chain, key, None))
            except (c2pa.C2paError, ValueError) as exc:
                raise BadInputError(f"C2PA signer: {self.config.describe()}: {exc}") from None
        return self._native

    def context(self) -> Any:
        # No claim thumbnail: c2pa would decode, shrink and re-encode every output for it (~10x the signing
        # time of a 1024x1024 PNG here), and the asset is its own best thumbnail. Verify-after-sign stays on.
        if self._context is None:
            self._context = _c2pa().Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
        return self._context

    def sign(self, data: bytes, fmt: str, facts: ManifestFacts) -> bytes:
        """Return `data` (an encoded PNG/JPEG/WebP) with the signed manifest embedded."""
        c2pa = _c2pa()
        mime = MIME_TYPES[fmt]
        out = io.BytesIO()
        try:
            with c2pa.Builder(facts.definition(mime), context=self.context()) as builder:
                builder.sign(self.native(), mime, io.BytesIO(data), out)
        except c2pa.C2paError as exc:
            # e.g. a certificate without the extended key usages C2PA requires
            raise BadInputError(f"C2PA signing failed with {self.config.describe()}: {exc}") from None
        return out.getvalue()


@dataclass(frozen=True)
class CredentialsReport:
    state: Validation
    detail: str  # c2pa's validation state or the first failure code
    manifest: dict[str, Any] | None = None  # the active manifest (JSON), when present
    failures: list[str] = field(default_factory=list)

    def own_assertion(self) -> dict[str, Any] | None:
        for assertion in (self.manifest or {}).get("assertions", []):
            if assertion.get("label") == ASSERTION:
                data: dict[str, Any] = assertion.get("data", {})
                return data
        return None

    def to_dict(self) -> dict[str, Any]:
        active = self.manifest or {}
        signature = active.get("signature_info") or {}
        return {
            "state": self.state,
            "detail": self.detail,
            "failures": self.failures,
            "claim_generator": [g.get("name") for g in active.get("claim_generator_info", [])],
            "issuer": signature.get("issuer"),
            "digital_source_type": _source_type(active),
            "portraitforge": self.own_assertion(),
        }


def _source_type(manifest: dict[str, Any]) -> str | None:
    for assertion in manifest.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            for action in assertion.get("data", {}).get("actions", []):
                if "digitalSourceType" in action:
                    return str(action["digitalSourceType"]).rsplit("/", 1)[-1]
    return None


def verify(path: Path) -> CredentialsReport:
    """valid: a manifest whose signature and hashes check out (trust in the issuer is reported apart);
    invalid: a manifest that fails (pixels or manifest changed after signing); missing: no manifest."""
    c2pa = _c2pa()
    try:
        with c2pa.Reader(str(path)) as reader:
            state = reader.get_validation_state() or ""
            store = json.loads(reader.json())
    except c2pa.C2paError as exc:
        text = str(exc)
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in text or "not found" in text.lower():
            return CredentialsReport("missing", "no C2PA manifest")
        return CredentialsReport(
            "invalid", f"unreadable manifest: {text.splitlines()[0] if text else type(exc).__name__}"
        )
    active = store.get("manifests", {}).get(store.get("active_manifest", ""), None)
    results = store.get("validation_results", {}).get("activeManifest", {})
    failures = [f.get("code", "") for f in results.get("failure", [])]
    # An issuer missing from c2pa's trust list is not tampering: a self-run CA is reported as such.
    tampering = [code for code in failures if code != "signingCredential.untrusted"]
    if state.lower() in ("valid", "trusted") or (state.lower() == "invalid" and not tampering and failures):
        detail = "trusted" if state.lower() == "trusted" else "valid signature (issuer not on the C2PA trust list)"
        return CredentialsReport("valid", detail, active, failures)
    return CredentialsReport("invalid", tampering[0] if tampering else state or "invalid", active, failures)
