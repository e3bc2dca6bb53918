// Command floor is the yardstick of chatauth's performance programs: a bare
// Functions Framework function that does only what no implementation of
// CreateSpace can avoid — one store read for the user's access token and
// one loopback HTTP call to the fake Chat API — so that cmd/loadtest and
// cmd/coldstart can report chatauth's figures as ratios to it, measured in
// the same run on the same machine.
//
// It verifies no caller, decrypts nothing, reads no secret and logs
// nothing per request: everything chatauth does beyond it is overhead the
// ratios expose. Like chatauth it connects its clients on the first request
// and keeps them for the life of the process.
//
// Environment (set by the programs, see internal/perf):
//
//	PORT                     listen port on 127.0.0.1
//	STORE                    "local" (bbolt file DATA_DIR/floor.db) or "firestore"
//	DATA_DIR                 the bbolt file's directory
//	GOOGLE_CLOUD_PROJECT     Firestore project (with FIRESTORE_EMULATOR_HOST)
//	CHAT_API_ENDPOINT        the fake Chat API's base URL, with a trailing slash
//
// The record of user users/{sub} is floor_tokens/{sub} with the field
// accessToken, as a Firestore document or as JSON in the bbolt bucket
// floor_tokens.
//
// Built with -tags localonly it does not link the Firestore client, so
// that the floor of the embedded-store setup pays nothing for Firestore's
// package initialisation; chatauth's runner is measured there in its own
// local-only build (cmd/local built with -tags nodemo,localonly).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	bolt "go.etcd.io/bbolt"
)

// Collection is the floor's store collection (and bbolt bucket).
const collection = "floor_tokens"

func init() {
	functions.HTTP("CreateSpace", handle)
}

func main() {
	os.Unsetenv("FUNCTION_TARGET")
	if err := funcframework.StartHostPort("127.0.0.1", os.Getenv("PORT")); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

// deps are built on the first request, as chatauth builds its server.
type deps struct {
	read func(ctx context.Context, sub string) (string, error)
	http *http.Client
	chat string
}

var (
	mu    sync.Mutex
	built *deps
)

func get(ctx context.Context) (*deps, error) {
	mu.Lock()
	defer mu.Unlock()
	if built != nil {
		return built, nil
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	d := &deps{http: &http.Client{Transport: t, Timeout: 30 * time.Second}, chat: os.Getenv("CHAT_API_ENDPOINT")}
	switch os.Getenv("STORE") {
	case "firestore":
		read, err := openFirestore(ctx)
		if err != nil {
			return nil, err
		}
		d.read = read
	default:
		db, err := bolt.Open(filepath.Join(os.Getenv("DATA_DIR"), "floor.db"), 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			return nil, err
		}
		d.read = func(ctx context.Context, sub string) (string, error) {
			var rec struct {
				AccessToken string `json:"accessToken"`
			}
			err := db.View(func(tx *bolt.Tx) error {
				v := tx.Bucket([]byte(collection)).Get([]byte(sub))
				if v == nil {
					return errors.New("no record")
				}
				return json.Unmarshal(v, &rec)
			})
			return rec.AccessToken, err
		}
	}
	built = d
	return d, nil
}

// handle serves POST /CreateSpace with {"user":"users/{sub}","displayName":…}.
func handle(w http.ResponseWriter, r *http.Request) {
	d, err := get(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	var req struct {
		User        string `json:"user"`
		DisplayName string `json:"displayName"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	token, err := d.read(r.Context(), strings.TrimPrefix(req.User, "users/"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	body, _ := json.Marshal(map[string]string{"displayName": req.DisplayName, "spaceType": "SPACE"})
	id := make([]byte, 16)
	rand.Read(id)
	cr, err := http.NewRequestWithContext(r.Context(), http.MethodPost, d.chat+"v1/spaces?requestId=floor-"+hex.EncodeToString(id), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	cr.Header.Set("Content-Type", "application/json")
	cr.Header.Set("Authorization", "Bearer "+token)
	resp, err := d.http.Do(cr)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			http.Error(w, err.Error(), http.StatusGatewayTimeout)
			return
		}
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}
