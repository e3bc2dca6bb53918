package fakegoogle

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/api/chat/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
)

// chatService is the real Chat client pointed at the fake, authorized with
// a fixed access token.
func chatService(t *testing.T, s *Server, accessToken string) *chat.Service {
	t.Helper()
	ctx := context.Background()
	svc, err := chat.NewService(ctx,
		option.WithEndpoint(s.ChatEndpoint()),
		option.WithHTTPClient(oauth2.NewClient(ctx, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: accessToken}))),
	)
	if err != nil {
		t.Fatalf("chat.NewService: %v", err)
	}
	return svc
}

// wantAPIError checks err is a *googleapi.Error with code and, in its body,
// the google.rpc status name.
func wantAPIError(t *testing.T, err error, code int, status string) *googleapi.Error {
	t.Helper()
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		t.Fatalf("got error %v, want *googleapi.Error %d", err, code)
	}
	if ge.Code != code || !strings.Contains(ge.Body, `"status":"`+status+`"`) {
		t.Fatalf("got %d %s, want %d %s", ge.Code, ge.Body, code, status)
	}
	return ge
}

func TestCreateSpaceThroughTheRealClient(t *testing.T) {
	s := newTestServer(t, Options{AutoConsent: true})
	cfg := oauthConfig(s)
	tok := login(t, cfg)
	ctx := context.Background()
	// The OAuth config's token source, as the product uses it, through
	// option.WithTokenSource rather than a prepared HTTP client.
	svc, err := chat.NewService(ctx, option.WithEndpoint(s.ChatEndpoint()), option.WithTokenSource(cfg.TokenSource(ctx, tok)))
	if err != nil {
		t.Fatalf("chat.NewService: %v", err)
	}
	got, err := svc.Spaces.Create(&chat.Space{
		DisplayName:  "Incident 4711",
		SpaceType:    "SPACE",
		SpaceDetails: &chat.SpaceDetails{Description: "pager went off"},
	}).RequestId("form-response-1").Context(ctx).Do()
	if err != nil {
		t.Fatalf("Spaces.Create: %v", err)
	}
	id, ok := strings.CutPrefix(got.Name, "spaces/AAAA")
	if !ok || len(id) != 7 {
		t.Errorf("name: got %q, want spaces/AAAA + 7 characters", got.Name)
	}
	if got.DisplayName != "Incident 4711" || got.SpaceType != "SPACE" || got.SpaceThreadingState != "THREADED_MESSAGES" {
		t.Errorf("got %q %q %q, want the requested name, SPACE, THREADED_MESSAGES", got.DisplayName, got.SpaceType, got.SpaceThreadingState)
	}
	if want := "https://chat.google.com/room/" + strings.TrimPrefix(got.Name, "spaces/") + "?cls=11"; got.SpaceUri != want {
		t.Errorf("spaceUri: got %q, want %q", got.SpaceUri, want)
	}
	if got.SpaceDetails == nil || got.SpaceDetails.Description != "pager went off" {
		t.Errorf("spaceDetails: got %+v, want the description", got.SpaceDetails)
	}
	if _, err := time.Parse(time.RFC3339, got.CreateTime); err != nil {
		t.Errorf("createTime %q: %v", got.CreateTime, err)
	}
	if got.MembershipCount == nil || got.MembershipCount.JoinedDirectHumanUserCount != 1 {
		t.Errorf("membershipCount: got %+v, want 1 human", got.MembershipCount)
	}

	rec, ok := s.SpaceByName(got.Name)
	if !ok {
		t.Fatalf("SpaceByName(%s): not found", got.Name)
	}
	if rec.Creator != DefaultUserSub || rec.RequestID != "form-response-1" || rec.AccessToken != tok.AccessToken || rec.Route != "spaces.create" || rec.Description != "pager went off" {
		t.Errorf("record: got %+v", rec)
	}
	if n := s.ChatCalls("spaces.create"); n != 1 {
		t.Errorf("ChatCalls: got %d, want 1", n)
	}
}

func TestCreateSpaceRequestIDIdempotency(t *testing.T) {
	s := newTestServer(t, Options{})
	alice, _ := s.IssueTokens(DefaultUserSub, ScopeChatSpacesCreate)
	bob := s.AddUser(User{Email: "bob@example.com", EmailVerified: true})
	bobToken, _ := s.IssueTokens(bob.Sub, ScopeChatSpaces)

	first, err := chatService(t, s, alice).Spaces.Create(&chat.Space{DisplayName: "Weekly", SpaceType: "SPACE"}).RequestId("r1").Do()
	if err != nil {
		t.Fatalf("first create: %v", err)
	}
	again, err := chatService(t, s, alice).Spaces.Create(&chat.Space{DisplayName: "Other name", SpaceType: "SPACE"}).RequestId("r1").Do()
	if err != nil {
		t.Fatalf("replayed create: %v", err)
	}
	if again.Name != first.Name || again.DisplayName != "Weekly" {
		t.Errorf("replay: got %s %q, want %s %q", again.Name, again.DisplayName, first.Name, "Weekly")
	}
	_, err = chatService(t, s, bobToken).Spaces.Create(&chat.Space{DisplayName: "Weekly", SpaceType: "SPACE"}).RequestId("r1").Do()
	wantAPIError(t, err, 409, "ALREADY_EXISTS")
	if n := len(s.Spaces()); n != 1 {
		t.Errorf("Spaces: got %d, want 1", n)
	}
}

func TestCreateSpaceValidation(t *testing.T) {
	tests := []struct {
		name       string
		space      *chat.Space
		wantCode   int
		wantStatus string
	}{
		{"duplicate display name", &chat.Space{DisplayName: "Taken", SpaceType: "SPACE"}, 409, "ALREADY_EXISTS"},
		{"no display name", &chat.Space{SpaceType: "SPACE"}, 400, "INVALID_ARGUMENT"},
		{"blank display name", &chat.Space{DisplayName: "   ", SpaceType: "SPACE"}, 400, "INVALID_ARGUMENT"},
		{"long display name", &chat.Space{DisplayName: strings.Repeat("x", 129), SpaceType: "SPACE"}, 400, "INVALID_ARGUMENT"},
		{"no space type", &chat.Space{DisplayName: "A"}, 400, "INVALID_ARGUMENT"},
		{"bad space type", &chat.Space{DisplayName: "A", SpaceType: "ROOM"}, 400, "INVALID_ARGUMENT"},
		{"group chat via create", &chat.Space{SpaceType: "GROUP_CHAT"}, 400, "INVALID_ARGUMENT"},
		{"long description", &chat.Space{DisplayName: "A", SpaceType: "SPACE", SpaceDetails: &chat.SpaceDetails{Description: strings.Repeat("x", 4097)}}, 400, "INVALID_ARGUMENT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Options{})
			at, _ := s.IssueTokens(DefaultUserSub, ScopeChatSpacesCreate)
			svc := chatService(t, s, at)
			if _, err := svc.Spaces.Create(&chat.Space{DisplayName: "Taken", SpaceType: "SPACE"}).Do(); err != nil {
				t.Fatalf("seed create: %v", err)
			}
			_, err := svc.Spaces.Create(tt.space).Do()
			wantAPIError(t, err, tt.wantCode, tt.wantStatus)
		})
	}
}

func TestCreateSpaceRejectsUnknownFields(t *testing.T) {
	s := newTestServer(t, Options{})
	at, _ := s.IssueTokens(DefaultUserSub, ScopeChatSpacesCreate)
	req, _ := http.NewRequest("POST", s.URL()+"/v1/spaces", strings.NewReader(`{"displayName":"A","spaceType":"SPACE","colour":"red"}`))
	req.Header.Set("Authorization", "Bearer "+at)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	status, _, body := readResponse(t, resp)
	if status != 400 || !strings.Contains(body, `Unknown name \"colour\" at 'space'`) {
		t.Errorf("got %d %s, want 400 naming the unknown field", status, body)
	}
}

func TestSetupSpace(t *testing.T) {
	member := func(name string) *chat.Membership {
		return &chat.Membership{Member: &chat.User{Name: name, Type: "HUMAN"}}
	}
	s := newTestServer(t, Options{})
	at, _ := s.IssueTokens(DefaultUserSub, ScopeChatSpacesCreate)
	svc := chatService(t, s, at)

	got, err := svc.Spaces.Setup(&chat.SetUpSpaceRequest{
		Space:       &chat.Space{DisplayName: "Incident 4712", SpaceType: "SPACE"},
		RequestId:   "setup-1",
		Memberships: []*chat.Membership{member("users/123"), member("users/bob@example.com"), member("users/" + DefaultUserSub)},
	}).Do()
	if err != nil {
		t.Fatalf("Spaces.Setup: %v", err)
	}
	rec, _ := s.SpaceByName(got.Name)
	if want := []string{"users/123", "users/bob@example.com"}; strings.Join(rec.Members, ",") != strings.Join(want, ",") {
		t.Errorf("members: got %q, want %q (the caller left out)", rec.Members, want)
	}
	if rec.Route != "spaces.setup" || rec.RequestID != "setup-1" {
		t.Errorf("record: got route %q requestId %q", rec.Route, rec.RequestID)
	}
	if got.MembershipCount == nil || got.MembershipCount.JoinedDirectHumanUserCount != 3 {
		t.Errorf("membershipCount: got %+v, want 3 humans", got.MembershipCount)
	}

	dm1, err := svc.Spaces.Setup(&chat.SetUpSpaceRequest{Space: &chat.Space{SpaceType: "DIRECT_MESSAGE"}, Memberships: []*chat.Membership{member("users/123")}}).Do()
	if err != nil {
		t.Fatalf("DM setup: %v", err)
	}
	dm2, err := svc.Spaces.Setup(&chat.SetUpSpaceRequest{Space: &chat.Space{SpaceType: "DIRECT_MESSAGE"}, Memberships: []*chat.Membership{member("users/123")}}).Do()
	if err != nil || dm2.Name != dm1.Name {
		t.Errorf("second DM setup: got %v %v, want the existing %s", dm2, err, dm1.Name)
	}

	bad := []struct {
		name string
		req  *chat.SetUpSpaceRequest
	}{
		{"group chat with one member", &chat.SetUpSpaceRequest{Space: &chat.Space{SpaceType: "GROUP_CHAT"}, Memberships: []*chat.Membership{member("users/1")}}},
		{"group chat with a name", &chat.SetUpSpaceRequest{Space: &chat.Space{SpaceType: "GROUP_CHAT", DisplayName: "x"}, Memberships: []*chat.Membership{member("users/1"), member("users/2")}}},
		{"member without users/", &chat.SetUpSpaceRequest{Space: &chat.Space{SpaceType: "SPACE", DisplayName: "y"}, Memberships: []*chat.Membership{member("bob@example.com")}}},
		{"member not HUMAN", &chat.SetUpSpaceRequest{Space: &chat.Space{SpaceType: "SPACE", DisplayName: "y"}, Memberships: []*chat.Membership{{Member: &chat.User{Name: "users/1", Type: "BOT"}}}}},
		{"no space", &chat.SetUpSpaceRequest{RequestId: "x"}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := svc.Spaces.Setup(tt.req).Do()
			wantAPIError(t, err, 400, "INVALID_ARGUMENT")
		})
	}
	if got := s.ChatCalls("spaces.setup"); got != 3+len(bad) {
		t.Errorf("ChatCalls(spaces.setup): got %d, want %d", got, 3+len(bad))
	}
}

func TestChatAuthentication(t *testing.T) {
	tests := []struct {
		name       string
		token      func(s *Server) string
		wantCode   int
		wantStatus string
	}{
		{"unknown token", func(s *Server) string { return "ya29.forged" }, 401, "UNAUTHENTICATED"},
		{"revoked token", func(s *Server) string {
			at, _ := s.IssueTokens(DefaultUserSub, ScopeChatSpacesCreate)
			s.RevokeUser(DefaultUserSub)
			return at
		}, 401, "UNAUTHENTICATED"},
		{"expired token", func(s *Server) string {
			at, _ := s.IssueTokens(DefaultUserSub, ScopeChatSpacesCreate)
			s.ExpireAccessTokens(DefaultUserSub)
			return at
		}, 401, "UNAUTHENTICATED"},
		{"no chat scope", func(s *Server) string {
			at, _ := s.IssueTokens(DefaultUserSub, "openid", "email")
			return at
		}, 403, "PERMISSION_DENIED"},
		{"chat app not configured", func(s *Server) string {
			at, _ := s.IssueTokens(DefaultUserSub, ScopeChatSpacesCreate)
			s.SetChatAppConfigured(false)
			return at
		}, 404, "NOT_FOUND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Options{})
			_, err := chatService(t, s, tt.token(s)).Spaces.Create(&chat.Space{DisplayName: "A", SpaceType: "SPACE"}).Do()
			ge := wantAPIError(t, err, tt.wantCode, tt.wantStatus)
			if tt.wantCode == 403 && !strings.Contains(ge.Body, "ACCESS_TOKEN_SCOPE_INSUFFICIENT") {
				t.Errorf("403 body: got %s, want reason ACCESS_TOKEN_SCOPE_INSUFFICIENT", ge.Body)
			}
			if tt.wantCode == 404 && ge.Message != msgAppNotFound {
				t.Errorf("404 message: got %q, want %q", ge.Message, msgAppNotFound)
			}
			if n := len(s.Spaces()); n != 0 {
				t.Errorf("Spaces: got %d, want none", n)
			}
		})
	}
}

func TestChatFaults(t *testing.T) {
	s := newTestServer(t, Options{})
	at, _ := s.IssueTokens(DefaultUserSub, ScopeChatSpacesCreate)
	svc := chatService(t, s, at)
	s.InjectChatFaults(
		ChatFault{Status: 503, RetryAfter: "7"},
		ChatFault{Status: 429, Message: "Quota exceeded for quota metric 'Write requests'."},
		ChatFault{Latency: 10 * time.Millisecond},
	)

	_, err := svc.Spaces.Create(&chat.Space{DisplayName: "A", SpaceType: "SPACE"}).Do()
	ge := wantAPIError(t, err, 503, "UNAVAILABLE")
	if got := ge.Header.Get("Retry-After"); got != "7" {
		t.Errorf("Retry-After: got %q, want 7", got)
	}
	_, err = svc.Spaces.Create(&chat.Space{DisplayName: "A", SpaceType: "SPACE"}).Do()
	ge = wantAPIError(t, err, 429, "RESOURCE_EXHAUSTED")
	if !strings.HasPrefix(ge.Message, "Quota exceeded") {
		t.Errorf("message: got %q, want the injected one", ge.Message)
	}
	if _, err := svc.Spaces.Create(&chat.Space{DisplayName: "A", SpaceType: "SPACE"}).Do(); err != nil {
		t.Errorf("call after the faults: %v", err)
	}
	if got := s.TotalChatCalls(); got != 3 {
		t.Errorf("TotalChatCalls: got %d, want 3", got)
	}

	// Cleared faults are not consumed by later calls.
	s.InjectChatFaults(ChatFault{Status: 500}, ChatFault{Status: 500})
	s.ClearChatFaults()
	if _, err := svc.Spaces.Create(&chat.Space{DisplayName: "C", SpaceType: "SPACE"}).Do(); err != nil {
		t.Errorf("call after ClearChatFaults: %v", err)
	}

	s.SetChatLatency(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = svc.Spaces.Create(&chat.Space{DisplayName: "B", SpaceType: "SPACE"}).Context(ctx).Do()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("with latency: got %v, want context.DeadlineExceeded", err)
	}
}

func TestGetSpace(t *testing.T) {
	s := newTestServer(t, Options{})
	creator, _ := s.IssueTokens(DefaultUserSub, ScopeChatSpaces)
	createOnly, _ := s.IssueTokens(DefaultUserSub, ScopeChatSpacesCreate)
	stranger, _ := s.IssueTokens("999", ScopeChatSpaces)
	created, err := chatService(t, s, creator).Spaces.Create(&chat.Space{DisplayName: "A", SpaceType: "SPACE"}).Do()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	got, err := chatService(t, s, creator).Spaces.Get(created.Name).Do()
	if err != nil || got.Name != created.Name || got.DisplayName != "A" {
		t.Errorf("get: got %v %v, want %s", got, err, created.Name)
	}
	_, err = chatService(t, s, createOnly).Spaces.Get(created.Name).Do()
	wantAPIError(t, err, 403, "PERMISSION_DENIED")
	_, err = chatService(t, s, stranger).Spaces.Get(created.Name).Do()
	wantAPIError(t, err, 404, "NOT_FOUND")
}
