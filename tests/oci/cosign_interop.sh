#!/usr/bin/env bash
# tests/oci/cosign_interop.sh - checks a cosign-format key-pair signature of a
# wasm OCI artifact, both built by hand byte for byte in the layout skillbox
# is to push, against skopeo (containers/image), the reference verifier of
# that layout. Needs only curl, openssl, xxd, coreutils and skopeo.
#
# Debian's skopeo 1.9.3 has sigstore's signature check patched out: with it,
# the cases that need the check are reported as skipped, and what skopeo does
# before the check (finding, fetching and classifying the attachment) plus the
# signature bytes (checked with openssl as containers/image checks them) are
# still tested. A skopeo with sigstore runs every case.
#
# Usage:
#   addr=$(tests/oci/registry.sh start /tmp/sbxr-1)
#   tests/oci/cosign_interop.sh "$addr" [WORKDIR]
#   tests/oci/registry.sh stop /tmp/sbxr-1
#
# Prints one line per case ("ok   - ...", "skip - ...", "FAIL - ...") and a
# closing "N passed, N failed, N skipped" line; exits 1 if any case failed.
# WORKDIR (default: a fresh temporary directory, removed at the end) keeps the
# keys, blobs, manifests, policies and skopeo's output of every case.
#
# What is built (see tests/oci/README.md for the field-by-field layout):
#   ADDR/wasm-skill:1            OCI image manifest, config
#                                application/vnd.wasm.config.v0+json, one
#                                application/wasm layer; the skill's TOML
#                                manifest as a manifest annotation
#   ADDR/wasm-skill:sha256-<hex>.sig
#                                cosign's signature attachment for it

set -euo pipefail

PROG=${0##*/}
ADDR=${1:?usage: $PROG 127.0.0.1:PORT [WORKDIR]}
if [[ -n ${2-} ]]; then
	W=$2
	mkdir -p "$W"
else
	W=$(mktemp -d)
	trap 'rm -rf "$W"' EXIT
fi
REPO=wasm-skill
TAG=1
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
passed=0 failed=0

die() {
	echo "$PROG: $*" >&2
	exit 1
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# Upload FILE as a blob of REPO (POST then PUT, the two-step upload every
# distribution registry supports).
push_blob() {
	local repo=$1 file=$2 loc sep
	loc=$(curl -fsS -X POST -D - -o /dev/null "http://$ADDR/v2/$repo/blobs/uploads/" |
		tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
	[[ -n $loc ]] || die "no upload location for $repo"
	[[ $loc == http* ]] || loc=http://$ADDR$loc
	sep='?'
	[[ $loc == *\?* ]] && sep='&'
	curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' \
		--data-binary "@$file" "$loc${sep}digest=sha256:$(sha256 "$file")"
}

put_manifest() {
	local repo=$1 ref=$2 file=$3 type=${4:-$OCI_MANIFEST}
	curl -fsS -o /dev/null -X PUT -H "Content-Type: $type" \
		--data-binary "@$file" "http://$ADDR/v2/$repo/manifests/$ref"
}

delete_tag_manifest() {
	local repo=$1 ref=$2 digest
	digest=$(curl -fsS -o /dev/null -D - -H "Accept: $OCI_MANIFEST" \
		"http://$ADDR/v2/$repo/manifests/$ref" 2>/dev/null |
		tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }') || return 0
	[[ -z $digest ]] || curl -fsS -o /dev/null -X DELETE "http://$ADDR/v2/$repo/manifests/$digest"
}

# ---------------------------------------------------------------- keys

openssl ecparam -name prime256v1 -genkey -noout -out "$W/key.pem" 2>/dev/null
openssl ec -in "$W/key.pem" -pubout -out "$W/pub.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$W/other-key.pem" 2>/dev/null
openssl ec -in "$W/other-key.pem" -pubout -out "$W/other-pub.pem" 2>/dev/null

# ---------------------------------------------------------------- artifact

# The smallest valid core module: magic and version. A real skill is a
# component; the registry and skopeo never look inside.
printf '\0asm\1\0\0\0' >"$W/skill.wasm"
wasm_digest=sha256:$(sha256 "$W/skill.wasm")
cat >"$W/skill.toml" <<'EOF'
name = "hello"
version = "0.1.0"
EOF
# The wasm OCI artifact config (CNCF TAG Runtime; the fields oci-wasm reads).
printf '{"created":"2026-01-01T00:00:00Z","author":null,"architecture":"wasm","os":"wasip2","layerDigests":["%s"],"component":{"exports":[],"imports":[],"target":null}}' \
	"$wasm_digest" >"$W/config.json"
push_blob "$REPO" "$W/skill.wasm"
push_blob "$REPO" "$W/config.json"
# The TOML travels as a manifest annotation (a JSON string): oci-wasm and
# wkg refuse a second layer. awk turns it into one escaped JSON string.
toml_json=$(awk 'BEGIN { ORS = "" } { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); print $0 "\\n" }' "$W/skill.toml")
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.wasm.config.v0+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/wasm","digest":"%s","size":%d,"annotations":{"org.opencontainers.image.title":"hello.wasm"}}],"annotations":{"org.opencontainers.image.version":"0.1.0","dev.skillbox.manifest":"%s"}}' \
	"$OCI_MANIFEST" "$(sha256 "$W/config.json")" "$(size "$W/config.json")" \
	"$wasm_digest" "$(size "$W/skill.wasm")" "$toml_json" >"$W/manifest.json"
put_manifest "$REPO" "$TAG" "$W/manifest.json"
manifest_digest=sha256:$(sha256 "$W/manifest.json")
sig_tag=${manifest_digest/:/-}.sig

# ---------------------------------------------------------------- signatures

# The simple-signing payload, exactly as cosign writes it (Go's encoding/json
# of sigstore's SimpleContainerImage: that field order, no spaces, no
# trailing newline).
payload() {
	local ref=$1 digest=$2
	printf '{"critical":{"identity":{"docker-reference":"%s"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}' \
		"$ref" "$digest"
}

# ECDSA P-256 over SHA-256 of the payload, ASN.1 DER, standard base64 with
# padding: what cosign writes into dev.cosignproject.cosign/signature.
sign_der_b64() { openssl dgst -sha256 -sign "$1" "$2" | base64 -w0; }

# The same signature as raw r||s (32 + 32 bytes, IEEE P1363), to show that
# this encoding is refused.
sign_raw_b64() {
	local der=$W/raw.der r s
	openssl dgst -sha256 -sign "$1" -out "$der" "$2"
	{
		read -r r
		read -r s
	} < <(openssl asn1parse -inform DER -in "$der" | awk -F: '/INTEGER/ { print $NF }')
	printf '%064s%064s' "$r" "$s" | tr ' ' 0 | xxd -r -p | base64 -w0
}

# Push the signature attachment of the artifact: one OCI manifest tagged
# sha256-<hex>.sig, config an OCI image config naming the payload as its only
# diff_id, one layer (the payload) with the base64 signature as annotation.
push_sig() {
	local payload_file=$1 b64sig=$2
	local layer_type=${3:-application/vnd.dev.cosign.simplesigning.v1+json}
	local manifest_type=${4:-$OCI_MANIFEST}
	local pd cfg=$W/sig-config.json
	pd=sha256:$(sha256 "$payload_file")
	printf '{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{}}' \
		"$pd" >"$cfg"
	push_blob "$REPO" "$payload_file"
	push_blob "$REPO" "$cfg"
	printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":%d,"digest":"sha256:%s"},"layers":[{"mediaType":"%s","size":%d,"digest":"%s","annotations":{"dev.cosignproject.cosign/signature":"%s"}}]}' \
		"$manifest_type" "$(size "$cfg")" "$(sha256 "$cfg")" "$layer_type" "$(size "$payload_file")" "$pd" "$b64sig" \
		>"$W/sig-manifest.json"
	put_manifest "$REPO" "$sig_tag" "$W/sig-manifest.json" "$manifest_type"
}

# ---------------------------------------------------------------- policy

# policy.json: only ADDR/REPO, and only with a sigstore signature by PUBKEY;
# IDENTITY is a signedIdentity object or empty (the default,
# matchRepoDigestOrExact).
write_policy() {
	local file=$1 pubkey=$2 identity=${3-}
	[[ -n $identity ]] && identity=",\"signedIdentity\":$identity"
	printf '{"default":[{"type":"reject"}],"transports":{"docker":{"%s/%s":[{"type":"sigstoreSigned","keyPath":"%s"%s}]}}}\n' \
		"$ADDR" "$REPO" "$pubkey" "$identity" >"$file"
}
mkdir -p "$W/registries.d" "$W/registries.d-off"
printf 'docker:\n  %s:\n    use-sigstore-attachments: true\n' "$ADDR" >"$W/registries.d/skillbox-test.yaml"

# The result of one case.
result() {
	local verdict=$1
	shift
	case $verdict in
	ok) passed=$((passed + 1)) && echo "ok   - $*" ;;
	skip) skipped=$((skipped + 1)) && echo "skip - $*" ;;
	*) failed=$((failed + 1)) && echo "FAIL - $*" ;;
	esac
}

# Debian's containers/image (5.23.1-4, in skopeo 1.9.3+ds1) carries
# disable-sigstore.patch: the cryptographic check of a sigstore signature
# (and sigstore signing) always fails with this message. skopeo still finds,
# fetches and classifies the attachment before it gets there.
DEBIAN_STUB='Debian-local change: sigstore disabled'

# verify NAME EXPECT POLICY [REGISTRIES_D [MESSAGE]]: skopeo copy of the
# artifact to dir:, which evaluates POLICY first. EXPECT is accept or reject;
# MESSAGE, if given, must be in skopeo's error. A verdict that a skopeo
# without sigstore could not give is reported as skipped.
verify() {
	local name=$1 expect=$2 policy=$3 regd=${4:-$W/registries.d} message=${5-} out got why
	out=$W/out-$name
	rm -rf "$out"
	if skopeo --policy "$policy" --registries.d "$regd" copy --src-tls-verify=false \
		"docker://$ADDR/$REPO:$TAG" "dir:$out" >"$W/$name.log" 2>&1; then
		got=accept why=""
	else
		got=reject
		why=$(tail -n1 "$W/$name.log" | sed 's/.*msg="//; s/"$//')
	fi
	if [[ $why == *"$DEBIAN_STUB"* ]]; then
		# The attachment was found and taken for a sigstore signature; only
		# the signature check itself is missing.
		result skip "$name: signature found, not checked ($why)"
	elif [[ $got == "$expect" && ( -z $message || $why == *"$message"* ) ]]; then
		result ok "$name: $got${why:+ ($why)}"
	else
		result fail "$name: expected $expect${message:+ ($message)}, got $got${why:+ ($why)}"
	fi
}

# found NAME POLICY: the attachment is found at sha256-<hex>.sig, fetched and
# classified as a sigstore signature (the step before its check): skopeo
# either accepts, or (Debian) stops at the disabled check.
found() {
	local name=$1 policy=$2 why
	if skopeo --policy "$policy" --registries.d "$W/registries.d" copy --src-tls-verify=false \
		"docker://$ADDR/$REPO:$TAG" "dir:$W/out-$name" >"$W/$name.log" 2>&1; then
		result ok "$name: found and accepted"
		return
	fi
	why=$(tail -n1 "$W/$name.log" | sed 's/.*msg="//; s/"$//')
	if [[ $why == *"$DEBIAN_STUB"* ]]; then
		result ok "$name: found and classified as a sigstore signature ($why)"
	else
		result fail "$name: $why"
	fi
}

# openssl_verify NAME EXPECT PUBKEY PAYLOAD B64SIG: the check upstream
# containers/image makes (sigstore's ECDSAVerifier: SHA-256, ASN.1 DER,
# standard base64), with openssl, so that it runs where skopeo cannot.
openssl_verify() {
	local name=$1 expect=$2 pubkey=$3 payload_file=$4 b64=$5 got
	if base64 -d <<<"$b64" >"$W/$name.sig" 2>/dev/null &&
		openssl dgst -sha256 -verify "$pubkey" -signature "$W/$name.sig" "$payload_file" >/dev/null 2>&1; then
		got=accept
	else
		got=reject
	fi
	if [[ $got == "$expect" ]]; then result ok "openssl $name: $got"; else result fail "openssl $name: expected $expect, got $got"; fi
}

repo_ref=$ADDR/$REPO
tag_ref=$ADDR/$REPO:$TAG
skipped=0
write_policy "$W/policy-repo.json" "$W/pub.pem" '{"type":"matchRepository"}'
write_policy "$W/policy-exact.json" "$W/pub.pem"
write_policy "$W/policy-other-key.json" "$W/other-pub.pem" '{"type":"matchRepository"}'
payload "$repo_ref" "$manifest_digest" >"$W/payload-repo.json"
payload "$tag_ref" "$manifest_digest" >"$W/payload-tag.json"
payload "$repo_ref" "sha256:$(printf '%064d' 0)" >"$W/payload-other.json"
sed 's/,/, /g' "$W/payload-repo.json" >"$W/payload-spaced.json"
good_sig=$(sign_der_b64 "$W/key.pem" "$W/payload-repo.json")
sig_hex=$(base64 -d <<<"$good_sig" | xxd -p -c 256)
sig_hex=${sig_hex:0:-2}$(printf '%02x' $((16#${sig_hex: -2} ^ 1)))
tampered=$(xxd -r -p <<<"$sig_hex" | base64 -w0)
raw_sig=$(sign_raw_b64 "$W/key.pem" "$W/payload-repo.json")
other_key_sig=$(sign_der_b64 "$W/other-key.pem" "$W/payload-repo.json")

# 0. The signature bytes, checked as containers/image checks them.
openssl_verify good accept "$W/pub.pem" "$W/payload-repo.json" "$good_sig"
openssl_verify tampered reject "$W/pub.pem" "$W/payload-repo.json" "$tampered"
openssl_verify raw-r-s reject "$W/pub.pem" "$W/payload-repo.json" "$raw_sig"
openssl_verify other-key reject "$W/pub.pem" "$W/payload-repo.json" "$other_key_sig"
openssl_verify reformatted-payload reject "$W/pub.pem" "$W/payload-spaced.json" "$good_sig"

# 1. Where and how skopeo looks for the attachment (checked by every skopeo).
delete_tag_manifest "$REPO" "$sig_tag"
verify no-signature reject "$W/policy-repo.json" "" "A signature was required, but no signature exists"
push_sig "$W/payload-repo.json" "$good_sig"
found attachment-at-sha256-hex.sig "$W/policy-repo.json"
verify sigstore-attachments-not-enabled reject "$W/policy-repo.json" "$W/registries.d-off" \
	"A signature was required, but no signature exists"
push_sig "$W/payload-repo.json" "$good_sig" application/json
verify layer-not-simplesigning reject "$W/policy-repo.json" "" "1 sigstore non-signature attachments"
push_sig "$W/payload-repo.json" "$good_sig" "" application/vnd.docker.distribution.manifest.v2+json
verify attachment-not-oci-manifest reject "$W/policy-repo.json" "" "unexpected MIME type for sigstore attachment manifest"

# 2. The signature check (needs a skopeo with sigstore: skipped with Debian's).
push_sig "$W/payload-repo.json" "$good_sig"
verify cosign-identity-matchRepository accept "$W/policy-repo.json"
verify cosign-identity-default-policy reject "$W/policy-exact.json"
verify wrong-public-key reject "$W/policy-other-key.json"
push_sig "$W/payload-tag.json" "$(sign_der_b64 "$W/key.pem" "$W/payload-tag.json")"
verify tag-identity-default-policy accept "$W/policy-exact.json"
verify tag-identity-matchRepository accept "$W/policy-repo.json"
push_sig "$W/payload-repo.json" "$tampered"
verify tampered-signature reject "$W/policy-repo.json"
push_sig "$W/payload-other.json" "$good_sig"
verify payload-changed-after-signing reject "$W/policy-repo.json"
push_sig "$W/payload-other.json" "$(sign_der_b64 "$W/key.pem" "$W/payload-other.json")"
verify signed-other-digest reject "$W/policy-repo.json"
push_sig "$W/payload-repo.json" "$raw_sig"
verify raw-r-s-encoding reject "$W/policy-repo.json"
push_sig "$W/payload-repo.json" "$other_key_sig"
verify signed-by-other-key reject "$W/policy-repo.json"
push_sig "$W/payload-repo.json" "$(tr -d '=' <<<"$good_sig")"
verify unpadded-base64 reject "$W/policy-repo.json"
push_sig "$W/payload-spaced.json" "$good_sig"
verify payload-reformatted reject "$W/policy-repo.json"

# 3. The good signature again, last, so that the registry is left with it;
# the artifact copied to dir: is the one pushed, byte for byte.
push_sig "$W/payload-repo.json" "$good_sig"
verify good-signature-again accept "$W/policy-repo.json"
printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$W/policy-any.json"
verify unsigned-policy-copy accept "$W/policy-any.json"
if cmp -s "$W/manifest.json" "$W/out-unsigned-policy-copy/manifest.json" &&
	cmp -s "$W/skill.wasm" "$W/out-unsigned-policy-copy/${wasm_digest#sha256:}" &&
	cmp -s "$W/config.json" "$W/out-unsigned-policy-copy/$(sha256 "$W/config.json")"; then
	result ok "dir: copy has the manifest, config and wasm layer byte for byte"
else
	result fail "dir: copy differs from what was pushed"
fi

echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))
