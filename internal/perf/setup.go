package perf

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"cloud.google.com/go/firestore"
	bolt "go.etcd.io/bbolt"

	"github.com/chatauth/chatauth"
	"github.com/chatauth/chatauth/internal/fakegoogle"
	"github.com/chatauth/chatauth/internal/fakesecretmanager"
	"github.com/chatauth/chatauth/internal/fsemulator"
)

// Store setups the programs measure.
const (
	// StoreLocal is the embedded store with secrets in files.
	StoreLocal = "local"
	// StoreFirestore is Firestore (the emulator) with secrets in the fake
	// Secret Manager.
	StoreFirestore = "firestore"
)

// Project is the Google Cloud project of the Firestore and Secret Manager
// fakes.
const Project = "chatauth-perf"

// floorCollection is where internal/perf/floor reads its records.
const floorCollection = "floor_tokens"

// Setup is one store setup with its fakes: a fake Google (OAuth and the
// Chat API) in this process, and for StoreFirestore the Firestore emulator
// and a fake Secret Manager. The runner (cmd/local) and the floor are
// spawned against it with ProductEnv and FloorEnv.
type Setup struct {
	Store  string
	Dir    string
	Google *fakegoogle.Server
	Users  []fakegoogle.User
	Secret string // the webhook HMAC secret callers sign with

	// ProductPort and FloorPort are the loopback ports the runner and the
	// floor listen on; they stay the same across spawns.
	ProductPort, FloorPort int

	// Proxy counts Firestore calls; nil for StoreLocal or when not asked.
	Proxy *CountingProxy

	sm           *fakesecretmanager.Server
	emulator     *fsemulator.Emulator // the emulator this Setup started; nil when given one
	emulatorHost string               // the emulator's address
	project      string               // the Firestore project: Project, or one of its own on a shared emulator
	fsHost       string               // what both processes get as FIRESTORE_EMULATOR_HOST
	secrets      map[string]string
}

// SetupOptions shape NewSetup.
type SetupOptions struct {
	Store string // StoreLocal or StoreFirestore
	Dir   string // a fresh directory for data, secrets and logs
	Users int    // users to create at the fake Google
	// CountReads puts a CountingProxy between both processes and
	// Firestore.
	CountReads bool
	// Emulator is the address of a running Firestore emulator to use
	// instead of starting one. The Setup then works in a project of its
	// own, so Setups sharing an emulator see none of each other's data.
	Emulator string
}

// sharedProjects numbers the projects of Setups on a shared emulator.
var sharedProjects atomic.Int64

// NewSetup starts the fakes. Close stops them.
func NewSetup(ctx context.Context, o SetupOptions) (_ *Setup, err error) {
	if o.Users < 1 {
		o.Users = 1
	}
	s := &Setup{Store: o.Store, Dir: o.Dir, secrets: map[string]string{}, project: Project}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for i := range o.Users {
		s.Users = append(s.Users, fakegoogle.User{Sub: fmt.Sprintf("1%020d", i+1), Email: fmt.Sprintf("perf%d@example.com", i+1), EmailVerified: true})
	}
	if s.ProductPort, err = FreePort(); err != nil {
		return nil, err
	}
	if s.FloorPort, err = FreePort(); err != nil {
		return nil, err
	}
	s.Google, err = fakegoogle.New(fakegoogle.Options{AutoConsent: true, Users: s.Users, RedirectURIs: []string{s.ProductURL() + "/OAuthCallback"}})
	if err != nil {
		return nil, err
	}
	b := make([]byte, 32)
	rand.Read(b)
	s.Secret = hex.EncodeToString(b)
	keyset, err := chatauth.GenerateKeyset()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"CLIENT_SECRETS":  s.Google.ClientJSON("web"),
		"WEBHOOK_SECRETS": []byte(s.Secret + "\n"),
		"TOKEN_KEYSET":    keyset,
	}
	for _, d := range []string{s.productDir(), s.floorDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}

	switch o.Store {
	case StoreLocal:
		for name, data := range files {
			path := filepath.Join(o.Dir, strings.ToLower(name))
			if err := os.WriteFile(path, data, 0o600); err != nil {
				return nil, err
			}
			s.secrets[name] = path
		}
	case StoreFirestore:
		if err := fsemulator.Available(); err != nil {
			return nil, err
		}
		if s.sm, err = fakesecretmanager.Start(); err != nil {
			return nil, err
		}
		for name, data := range files {
			s.secrets[name] = s.sm.Put("projects/"+Project+"/secrets/"+strings.ToLower(name), data)
		}
		if o.Emulator != "" {
			s.emulatorHost = o.Emulator
			s.project = fmt.Sprintf("%s-%d-%d", Project, os.Getpid(), sharedProjects.Add(1))
		} else {
			if s.emulator, err = fsemulator.Start(ctx); err != nil {
				return nil, err
			}
			s.emulatorHost = s.emulator.Host()
		}
		s.fsHost = s.emulatorHost
		if o.CountReads {
			if s.Proxy, err = StartCountingProxy(s.emulatorHost); err != nil {
				return nil, err
			}
			s.fsHost = s.Proxy.Addr()
		}
	default:
		return nil, fmt.Errorf("perf: unknown store %q", o.Store)
	}
	return s, nil
}

// Close stops the fakes.
func (s *Setup) Close() {
	if s.Proxy != nil {
		s.Proxy.Close()
	}
	if s.emulator != nil {
		s.emulator.Stop()
	}
	if s.sm != nil {
		s.sm.Close()
	}
	if s.Google != nil {
		s.Google.Close()
	}
}

func (s *Setup) productDir() string { return filepath.Join(s.Dir, "product") }
func (s *Setup) floorDir() string   { return filepath.Join(s.Dir, "floor") }

// ProductURL and FloorURL are the processes' base URLs.
func (s *Setup) ProductURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.ProductPort) }
func (s *Setup) FloorURL() string   { return "http://127.0.0.1:" + strconv.Itoa(s.FloorPort) }

// ProductEnv is the runner's whole environment: the variables of
// README.md, "Configuration", pointing at the fakes.
func (s *Setup) ProductEnv() []string {
	base := s.ProductURL()
	env := []string{
		"PORT=" + strconv.Itoa(s.ProductPort),
		"STORE=" + s.Store,
		"DATA_DIR=" + s.productDir(),
		"REDIRECT_URL=" + base + "/OAuthCallback",
		"PUBLIC_URL=" + base,
		"CLIENT_SECRETS=" + s.secrets["CLIENT_SECRETS"],
		"WEBHOOK_SECRETS=" + s.secrets["WEBHOOK_SECRETS"],
		"TOKEN_KEYSET=" + s.secrets["TOKEN_KEYSET"],
		"CHAT_API_ENDPOINT=" + s.Google.ChatEndpoint(),
		"OAUTH_REVOKE_URL=" + s.Google.RevokeURL(),
	}
	if s.Store == StoreFirestore {
		env = append(env,
			"GOOGLE_CLOUD_PROJECT="+s.project,
			"FIRESTORE_EMULATOR_HOST="+s.fsHost,
			"SECRETMANAGER_EMULATOR_HOST="+s.sm.Addr())
	}
	return env
}

// FloorEnv is the floor's whole environment.
func (s *Setup) FloorEnv() []string {
	env := []string{
		"PORT=" + strconv.Itoa(s.FloorPort),
		"STORE=" + s.Store,
		"DATA_DIR=" + s.floorDir(),
		"CHAT_API_ENDPOINT=" + s.Google.ChatEndpoint(),
	}
	if s.Store == StoreFirestore {
		env = append(env, "GOOGLE_CLOUD_PROJECT="+s.project, "FIRESTORE_EMULATOR_HOST="+s.fsHost)
	}
	return env
}

// SeedFloor stores a valid access token for every user where the floor
// reads it. The floor must not be running (the bbolt file admits one
// process).
func (s *Setup) SeedFloor(ctx context.Context) error {
	tokens := map[string]string{}
	for _, u := range s.Users {
		access, _ := s.Google.IssueTokens(u.Sub, fakegoogle.ScopeChatSpacesCreate)
		tokens[u.Sub] = access
	}
	if s.Store == StoreFirestore {
		os.Setenv("FIRESTORE_EMULATOR_HOST", s.emulatorHost)
		c, err := firestore.NewClient(ctx, s.project)
		if err != nil {
			return err
		}
		defer c.Close()
		for sub, tok := range tokens {
			if _, err := c.Collection(floorCollection).Doc(sub).Set(ctx, map[string]any{"accessToken": tok}); err != nil {
				return fmt.Errorf("perf: seed floor: %w", err)
			}
		}
		return nil
	}
	db, err := bolt.Open(filepath.Join(s.floorDir(), "floor.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(floorCollection))
		if err != nil {
			return err
		}
		for sub, tok := range tokens {
			v, _ := json.Marshal(map[string]string{"accessToken": tok})
			if err := b.Put([]byte(sub), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// SeedProduct connects every user through chatauth's own consent flow on
// the running runner at base, as a browser would: OAuthStart, the fake's
// automatic consent, OAuthCallback with the state cookie.
func (s *Setup) SeedProduct(ctx context.Context) error {
	for _, u := range s.Users {
		if err := consent(ctx, s.ProductURL(), u.Email); err != nil {
			return fmt.Errorf("perf: consent for %s: %w", u.Email, err)
		}
	}
	return nil
}

func consent(ctx context.Context, base, email string) error {
	c := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u, cookie string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, nil
	}
	resp, err := get(base+"/OAuthStart?login_hint="+url.QueryEscape(email), "")
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusFound || len(resp.Cookies()) == 0 {
		return fmt.Errorf("OAuthStart answered %d", resp.StatusCode)
	}
	cookie := resp.Cookies()[0]
	resp, err = get(resp.Header.Get("Location"), "")
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusFound {
		return fmt.Errorf("the fake consent answered %d", resp.StatusCode)
	}
	resp, err = get(resp.Header.Get("Location"), cookie.Name+"="+cookie.Value)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("OAuthCallback answered %d", resp.StatusCode)
	}
	return nil
}

// WaitListening waits until something accepts connections on base's port.
func WaitListening(ctx context.Context, base string, p *Process) error {
	u, err := url.Parse(base)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if c, err := net.Dial("tcp", u.Host); err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.Exited() {
			return p.exitedEarly("listening")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("perf: %s does not listen: %w", base, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
