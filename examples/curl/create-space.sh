#!/usr/bin/env bash
# Creates a Google Chat space through chatauth's CreateSpace, as a user who
# has connected Google Chat, signing the request with X-Signature
# (HMAC-SHA256 under a webhook secret) with curl and openssl.
#
#   CHATAUTH_URL=https://REGION-PROJECT.cloudfunctions.net \
#   CHATAUTH_SECRET_FILE=webhook_secret \
#     examples/curl/create-space.sh alice@example.com "Incident 4711" [REQUEST_ID]
#
#   # Any CreateSpace body (members, spaceType, description), from stdin:
#   echo '{"user":"alice@example.com","displayName":"Launch","members":["bob@example.com"]}' |
#     CHATAUTH_URL=... CHATAUTH_SECRET_FILE=... examples/curl/create-space.sh -
#
# CHATAUTH_SECRET_FILE holds the secret: its first non-blank line, as in
# WEBHOOK_SECRETS. From Secret Manager:
#   (umask 077; gcloud secrets versions access latest --secret=chatauth-webhook > webhook_secret)
# With `go run ./cmd/local`, it is .chatauth/webhook_secret.
#
# The secret is never printed. openssl's -hmac takes it as an argument, so it
# is visible in the process list while openssl runs: run this on a machine
# you do not share. The signature goes to curl in a header file, not on its
# command line.
#
# The answer (the Space, or the JSON error) goes to stdout; the exit status is
# 0 for 200 and 1 for any other answer.
set -euo pipefail

usage() {
  echo "usage: create-space.sh USER DISPLAY_NAME [REQUEST_ID]   or   create-space.sh - < body.json" >&2
  exit 2
}

url=${CHATAUTH_URL:?set CHATAUTH_URL to the functions base URL, e.g. https://REGION-PROJECT.cloudfunctions.net}
url=${url%/}
secret_file=${CHATAUTH_SECRET_FILE:?set CHATAUTH_SECRET_FILE to a file that holds the webhook secret}

secret=$(grep -m1 -v '^[[:space:]]*$' "$secret_file" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//') || true
if [ -z "$secret" ]; then
  echo "create-space: $secret_file holds no secret" >&2
  exit 2
fi

# json_string quotes a value as a JSON string. Control characters are
# refused rather than escaped: a display name may not hold them anyway.
json_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "${1:-}" = "-" ]; then
  cat >"$tmp/body"
else
  [ $# -ge 2 ] && [ $# -le 3 ] || usage
  for v in "$@"; do
    if [[ $v =~ [[:cntrl:]] ]]; then
      echo "create-space: arguments may not hold control characters" >&2
      exit 2
    fi
  done
  {
    printf '{"user":%s,"displayName":%s' "$(json_string "$1")" "$(json_string "$2")"
    if [ $# -eq 3 ]; then
      printf ',"requestId":%s' "$(json_string "$3")"
    fi
    printf '}'
  } >"$tmp/body"
fi

# The signature covers "<t>.<body>", byte for byte what curl sends.
t=$(date +%s)
sig=$({ printf '%s.' "$t"; cat "$tmp/body"; } | openssl dgst -sha256 -hmac "$secret" | awk '{print $NF}')
if ! [[ $sig =~ ^[0-9a-f]{64}$ ]]; then
  echo "create-space: openssl did not produce an HMAC-SHA256" >&2
  exit 2
fi
printf 'X-Signature: t=%s,v1=%s\n' "$t" "$sig" >"$tmp/headers"

code=$(curl -sS -o "$tmp/answer" -w '%{http_code}' -X POST \
  -H 'Content-Type: application/json' -H @"$tmp/headers" \
  --data-binary @"$tmp/body" "$url/CreateSpace")
cat "$tmp/answer"
echo
if [ "$code" != 200 ]; then
  echo "create-space: CreateSpace answered HTTP $code" >&2
  if grep -q '"AUTHORIZATION_REQUIRED"' "$tmp/answer"; then
    echo "create-space: the user must connect Google Chat first: open the authorizeUrl above in their browser" >&2
  fi
  exit 1
fi
