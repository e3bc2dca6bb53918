package chatauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"
)

// decodeStrict decodes a JSON object into v, a pointer to a struct,
// refusing what encoding/json lets pass: unknown fields, keys that name a
// field only in another case, duplicate keys (which parsers disagree on),
// invalid UTF-8 (silently replaced otherwise) and trailing data.
//
// A well-formed body takes the fast path: one scan of the top-level keys
// and one json.Unmarshal. Anything else — and any body the fast path
// refuses — goes through the full checks below, which name the problem.
// The fast path accepts only what the full checks accept, decoded the same
// way (checkStrictPaths, run by FuzzCreateSpaceRequest).
func decodeStrict(body []byte, v any) error {
	if !utf8.Valid(body) {
		return errorf(statusInvalidArgument, "the body is not valid UTF-8")
	}
	names := jsonNames(v)
	if scanKeys(body, names) && json.Unmarshal(body, v) == nil {
		return nil
	}
	return decodeStrictSlow(body, v, names)
}

// decodeStrictSlow is decodeStrict with the full checks, for a body the
// fast path refused: it finds and names the problem.
func decodeStrictSlow(body []byte, v any, names map[string]bool) error {
	reflect.ValueOf(v).Elem().SetZero() // json.Unmarshal may have filled part of it
	if err := checkKeys(body, names); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(statusInvalidArgument, "the body is not a valid request: %s", jsonProblem(err))
	}
	// dec.More would miss a stray '}' or ']': it reports only whether
	// another element follows inside an array or object.
	if _, err := dec.Token(); err != io.EOF {
		return errorf(statusInvalidArgument, "the body has data after the JSON object")
	}
	return nil
}

// jsonProblem describes a decoding error without quoting the input.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		return fmt.Sprintf("the field %q must be %s", te.Field, jsonTypeName(te.Type.Kind().String()))
	case errors.As(err, &se):
		return fmt.Sprintf("JSON syntax error at byte %d", se.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	case errors.Is(err, io.EOF):
		return "the body is empty"
	default:
		return "malformed JSON"
	}
}

func jsonTypeName(kind string) string {
	switch kind {
	case "slice":
		return "an array of strings"
	case "string":
		return "a string"
	}
	return "of another type"
}

// checkKeys walks the top-level object of body and refuses a key that
// appears twice or is not exactly one of names. encoding/json fills a
// field from a key that matches its name in any case, Unicode folding
// included ("USER" and "uſer" fill User), so without the exact match a
// body one parser reads as alice's would be read here as bob's.
func checkKeys(body []byte, names map[string]bool) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return errorf(statusInvalidArgument, "the body is not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errorf(statusInvalidArgument, "the body is not a JSON object")
		}
		key, _ := tok.(string)
		if !names[key] {
			return errorf(statusInvalidArgument, "the body is not a valid request: unknown field %q", key)
		}
		if seen[key] {
			return errorf(statusInvalidArgument, "the field %q appears more than once", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return errorf(statusInvalidArgument, "the body is not a valid request: %s", jsonProblem(err))
		}
	}
	return nil
}

// scanKeys reports whether body is one JSON object, with nothing but
// white space after it, whose top-level keys are each exactly one of
// names and appear once. It is checkKeys without the allocations of
// json.Decoder's token stream, a sizeable part of CreateSpace's request
// handling (BENCHMARKS.md). It checks only the structure it
// walks: json.Unmarshal validates the rest, and any false answer sends the
// body to checkKeys, which explains what is wrong.
func scanKeys(body []byte, names map[string]bool) bool {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return skipSpace(body, i+1) == len(body)
	}
	var seen [8][]byte // CreateSpace has 6 fields, Disconnect 1
	n := 0
	for {
		if i >= len(body) || body[i] != '"' {
			return false
		}
		end := skipString(body, i)
		if end < 0 {
			return false
		}
		raw := body[i+1 : end-1]
		if bytes.IndexByte(raw, '\\') >= 0 {
			return false // an escaped key: rare, left to checkKeys
		}
		if !names[string(raw)] || n == len(seen) {
			return false
		}
		for _, k := range seen[:n] {
			if bytes.Equal(k, raw) {
				return false
			}
		}
		seen[n] = raw
		n++
		i = skipSpace(body, end)
		if i >= len(body) || body[i] != ':' {
			return false
		}
		if i = skipValue(body, i+1); i < 0 {
			return false
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case '}':
			return skipSpace(body, i+1) == len(body)
		default:
			return false
		}
	}
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just after the string that starts with the
// quote at b[i], or -1 if it does not end.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index of the ',' or '}' that ends the value
// starting at b[i], or -1. Strings are skipped whole, so brackets and
// commas inside them do not count; what lies between the delimiters is
// left to json.Unmarshal to check.
func skipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			end := skipString(b, i)
			if end < 0 {
				return -1
			}
			i = end - 1
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
		case ',':
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// jsonNames returns the JSON names of the fields of the struct v points to.
// They are found once per type, not by reflection on every request
// (BENCHMARKS.md). The map returned is shared: read it only.
func jsonNames(v any) map[string]bool {
	t := reflect.TypeOf(v).Elem()
	if names, ok := jsonNamesByType.Load(t); ok {
		return names.(map[string]bool)
	}
	names := make(map[string]bool, t.NumField())
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names[name] = true
		}
	}
	jsonNamesByType.Store(t, names)
	return names
}

var jsonNamesByType sync.Map // reflect.Type → map[string]bool
