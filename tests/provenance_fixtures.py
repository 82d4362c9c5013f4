"""A throw-away C2PA test CA and signing certificate (made with `cryptography`), and image edits for the tests."""

from __future__ import annotations

import datetime
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from PIL import Image

# C2PA 2.x signer certificates: digitalSignature key usage and one of these extended key usages
# (emailProtection, or documentSigning 1.3.6.1.5.5.7.3.36); never a CA, never self-signed.
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")


@dataclass(frozen=True)
class SignerFiles:
    chain: Path  # end-entity certificate then the CA, PEM
    key: Path  # PKCS#8 private key, PEM
    alg: str


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test")]
    )


def _usage(signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signing,
        crl_sign=not signing,
        encipher_only=False,
        decipher_only=False,
    )


def make_test_signer(folder: Path, alg: str = "es256") -> SignerFiles:
    """A test CA and an end-entity certificate it issued, with the extensions C2PA checks."""
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("portraitforge test CA"))
        .issuer_name(_name("portraitforge test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(signing=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    key = ec.generate_private_key(ec.SECP256R1()) if alg == "es256" else rsa.generate_private_key(65537, 2048)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("portraitforge test signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(signing=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    chain = folder / f"chain-{alg}.pem"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    key_path = folder / f"key-{alg}.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return SignerFiles(chain, key_path, alg)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def edit_one_pixel_png(path: Path) -> None:
    """Change one pixel of a PNG and keep every other chunk (the C2PA manifest included) byte for byte:
    what an editor that preserves metadata does. Re-saving through Pillow would drop the manifest instead."""
    data = path.read_bytes()
    rgb = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
    rgb[rgb.shape[0] // 2, rgb.shape[1] // 2] ^= np.uint8(0x40)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    new_idat = b"".join(body for kind, body in _png_chunks(buffer.getvalue()) if kind == b"IDAT")
    out, wrote = [data[:8]], False
    for kind, body in _png_chunks(data):
        if kind == b"IDAT":
            if not wrote:
                out.append(_chunk(b"IDAT", new_idat))
                wrote = True
            continue
        out.append(_chunk(kind, body))
    path.write_bytes(b"".join(out))
