package chatauth

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/runenames"
)

// Names hide nothing: a space's displayName and description are shown to
// people who decide by what they read, so they may hold no character that
// is invisible or changes the direction of the text around it. Such
// characters make a name display as something other than what it says
// ("Trojan Source": "invoice\u202egpj.exe" shows as "invoiceexe.jpg"), make
// two different names look the same ("admin" and "ad\u200bmin"), or carry
// text no reader sees.

// checkVisible refuses s, the value of the request field named field, if
// it holds a character that does not show as itself (hiddenRune). With
// breaks, line feeds, carriage returns and tabs are allowed, as a
// description's line breaks. The message names the field and the code
// point, never the value.
func checkVisible(field, s string, breaks bool) error {
	r, ok := hiddenRune(s, breaks)
	if !ok {
		return nil
	}
	var kind string
	switch {
	case unicode.Is(unicode.Bidi_Control, r):
		kind = "a character that changes the direction of the text around it"
	case unicode.IsControl(r):
		kind = "a control character"
		if breaks {
			kind += " (only line breaks and tabs are allowed)"
		}
	case unicode.In(r, unicode.Zl, unicode.Zp):
		kind = "a line or paragraph separator"
		if breaks {
			kind += ` (break lines with "\n")`
		}
	default:
		kind = "an invisible character"
	}
	return errorf(statusInvalidArgument, `%q contains %s, %s; remove it`, field, describeRune(r), kind)
}

// hiddenRune returns the first character of s that a reader does not see
// as itself:
//
//   - controls (category Cc), except "\n", "\r" and "\t" when breaks is set;
//   - format characters (category Cf): the direction marks and the
//     embeddings, overrides and isolates, the zero-width space, joiners and
//     non-joiner, the word joiner, the byte order mark, invisible operators,
//     the tag characters, and so on;
//   - the line and paragraph separators (categories Zl and Zp);
//   - the other default-ignorable code points, which render as nothing
//     (the Hangul fillers, the combining grapheme joiner, U+E0000 block);
//   - a variation selector that selects nothing: at the start, after a
//     space, a control, a joiner or another selector, where a run of them
//     can carry hidden text.
//
// One format character stays allowed where it is meant: the zero-width
// joiner between two symbols, which builds the emoji sequences people put
// in names (the technologist emoji is person, U+200D, laptop). Between
// letters, or at either end, it is refused.
func hiddenRune(s string, breaks bool) (rune, bool) {
	prev := rune(-1) // the last character, -1 at the start
	for i, r := range s {
		switch {
		case unicode.IsControl(r):
			if !(breaks && (r == '\n' || r == '\r' || r == '\t')) {
				return r, true
			}
		case r == '\u200d':
			next, _ := utf8.DecodeRuneInString(s[i+len("\u200d"):])
			if !isEmojiBase(emojiBefore(s[:i])) || !isEmojiBase(next) {
				return r, true
			}
		case unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Other_Default_Ignorable_Code_Point):
			return r, true
		case unicode.Is(unicode.Variation_Selector, r):
			if prev < 0 || prev == '\u200d' || unicode.IsSpace(prev) || unicode.IsControl(prev) || unicode.Is(unicode.Variation_Selector, prev) {
				return r, true
			}
		}
		prev = r
	}
	return 0, false
}

// emojiBefore returns the character an emoji sequence ending at the end of
// s is built on: the last one, skipping one presentation selector
// (U+FE0F) and a skin-tone modifier (U+1F3FB–U+1F3FF), which may follow
// it. It returns -1 for an empty s.
func emojiBefore(s string) rune {
	r, n := utf8.DecodeLastRuneInString(s)
	if r == '\ufe0f' {
		s = s[:len(s)-n]
		r, n = utf8.DecodeLastRuneInString(s)
	}
	if '\U0001f3fb' <= r && r <= '\U0001f3ff' {
		s = s[:len(s)-n]
		r, _ = utf8.DecodeLastRuneInString(s)
	}
	if r == utf8.RuneError && len(s) == 0 {
		return -1
	}
	return r
}

// isEmojiBase reports whether r can start or continue an emoji sequence:
// emoji are symbols (category So). Letters, digits and marks are not, nor
// U+FFFD, which also stands for "no character" (utf8.RuneError).
func isEmojiBase(r rune) bool {
	return r >= 0 && r != utf8.RuneError && unicode.Is(unicode.So, r)
}

// describeRune names r for a message, as "U+200E (LEFT-TO-RIGHT MARK)".
// Controls have no name of their own (runenames calls them "<control>").
func describeRune(r rune) string {
	if n := runenames.Name(r); n != "" && n[0] != '<' {
		return fmt.Sprintf("U+%04X (%s)", r, n)
	}
	return fmt.Sprintf("U+%04X", r)
}
