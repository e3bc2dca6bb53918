package chatauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// SignBody returns the X-Signature header value (README.md, "Caller
// authentication") for body at time at, signed with the first secret of
// a WEBHOOK_SECRETS file's contents: the secret a rotation adds first is
// the one callers sign with. The chatauth CLI signs with it, so its
// reading of the file is the function's.
func SignBody(secretsFile, body []byte, at time.Time) (string, error) {
	secrets, err := parseWebhookSecrets(secretsFile)
	if err != nil {
		return "", err
	}
	ts := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, secrets[0])
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil)), nil
}
