package main

import (
	"bufio"
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
)

// ignoreRule is one line of .helmignore (helm's pkg/ignore): a filepath.Match pattern,
// matched against the base name unless it contains a slash; `!` negates, a trailing `/`
// matches directories only, a leading `/` anchors at the chart root.
type ignoreRule struct {
	pattern string
	negate  bool
	mustDir bool
	base    bool
}

// ignoreRules parses .helmignore, after helm's default rule (hidden files in templates/).
func ignoreRules(helmignore []byte) ([]ignoreRule, error) {
	rules := []ignoreRule{{pattern: "templates/.?*"}}
	scanner := bufio.NewScanner(bytes.NewReader(helmignore))
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.Contains(line, "**") {
			return nil, fmt.Errorf(".helmignore: double-star (**) syntax is not supported: %q", line)
		}
		rule := ignoreRule{}
		if strings.HasPrefix(line, "!") {
			rule.negate = true
			line = line[1:]
		}
		if strings.HasSuffix(line, "/") {
			rule.mustDir = true
			line = strings.TrimSuffix(line, "/")
		}
		switch {
		case strings.HasPrefix(line, "/"):
			line = strings.TrimPrefix(line, "/")
		case !strings.Contains(line, "/"):
			rule.base = true
		}
		if _, err := filepath.Match(line, "x"); err != nil {
			return nil, fmt.Errorf(".helmignore: bad pattern %q: %w", line, err)
		}
		rule.pattern = line
		rules = append(rules, rule)
	}
	return rules, scanner.Err()
}

// ignored applies the rules as helm's ignore.Rules.Ignore does, to a path relative to the
// chart root (slash-separated).
func ignored(rules []ignoreRule, rel string, isDir bool) bool {
	if rel == "" || rel == "." {
		return false
	}
	for _, r := range rules {
		name := rel
		if r.base {
			name = filepath.Base(rel)
		}
		matched, _ := filepath.Match(r.pattern, name)
		if r.negate {
			if r.mustDir && !isDir {
				return true
			}
			if !matched {
				return true
			}
			continue
		}
		if r.mustDir && !isDir {
			continue
		}
		if matched {
			return true
		}
	}
	return false
}
