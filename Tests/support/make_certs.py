#!/usr/bin/env python3
"""Makes the certificates a TLS test needs, fresh each run, with trustme (PyPI):
a CA; a leaf for alpha.test (and *.alpha.test) and one for beta.test; a client certificate
with a URI SAN (as SPIFFE ids are); and a second CA that signs a client certificate Sluice
must refuse. Writes PEM files into the folder given as the only argument."""
import datetime
import os
import sys

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
ca = trustme.CA(organization_name="Sluice Test CA")
other_ca = trustme.CA(organization_name="Untrusted CA")


def write(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


write("ca.pem", ca.cert_pem.bytes())
for name, identities in [("alpha", ["alpha.test", "*.alpha.test"]), ("beta", ["beta.test"])]:
    leaf = ca.issue_cert(*identities, organization_name="Sluice", organization_unit_name=name)
    write(f"{name}.pem", b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    write(f"{name}.key", leaf.private_key_pem.bytes())

# trustme takes DNS names and IPs only; the client certificate (URI SAN first, as a SPIFFE
# id, then a DNS name) is signed with the CA's key directly.
ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
client_key = ec.generate_private_key(ec.SECP256R1())
now = datetime.datetime.now(datetime.timezone.utc)
client = (
    x509.CertificateBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"), x509.NameAttribute(NameOID.COMMON_NAME, "client")]))
    .issuer_name(ca_cert.subject)
    .public_key(client_key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(hours=1))
    .not_valid_after(now + datetime.timedelta(days=30))
    .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://sluice.test/client"), x509.DNSName("client.sluice.test")]), critical=False)
    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    .sign(ca_key, hashes.SHA256())
)
write("client.pem", client.public_bytes(serialization.Encoding.PEM))
write("client.key", client_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
rogue = other_ca.issue_cert("rogue.test", common_name="rogue")
write("rogue.pem", b"".join(blob.bytes() for blob in rogue.cert_chain_pems))
write("rogue.key", rogue.private_key_pem.bytes())
