package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/BurntSushi/toml"
	"github.com/Masterminds/sprig"
	yamlv3 "gopkg.in/yaml.v3"
	"sigs.k8s.io/yaml"
)

// helm wraps the message of `required` in these markers so the execution error can be reduced
// to the message alone (pkg/engine: warnWrap, cleanupExecError).
const (
	warnStart = "HELM_ERR_START"
	warnEnd   = "HELM_ERR_END"
)

var warnPattern = regexp.MustCompile(warnStart + `(.*)` + warnEnd)

// recursionMax bounds nested `include`s of one name, as helm does.
const recursionMax = 1000

// funcMap is helm's pkg/engine funcMap: sprig's text functions without env and expandenv,
// plus helm's conversions. include, tpl and required are bound per render (engineFuncs).
func funcMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	for name, fn := range map[string]interface{}{
		"toToml":        toTOML,
		"fromToml":      fromTOML,
		"toYaml":        toYAML,
		"mustToYaml":    mustToYAML,
		"toYamlPretty":  toYAMLPretty,
		"fromYaml":      func(s string) map[string]interface{} { return decodeTable(unmarshalYAML, s) },
		"fromYamlArray": func(s string) []interface{} { return decodeList(unmarshalYAML, s) },
		"toJson":        toJSON,
		"mustToJson":    mustToJSON,
		"fromJson":      func(s string) map[string]interface{} { return decodeTable(json.Unmarshal, s) },
		"fromJsonArray": func(s string) []interface{} { return decodeList(json.Unmarshal, s) },
		// `helm template` has no cluster: lookup finds nothing.
		"lookup": func(string, string, string, string) (map[string]interface{}, error) {
			return map[string]interface{}{}, nil
		},
	} {
		f[name] = fn
	}
	return f
}

// toYAML is helm's toYaml: sigs.k8s.io/yaml (JSON field rules, sorted keys), without the
// final newline; an error gives "".
func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func mustToYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		panic(err)
	}
	return strings.TrimSuffix(string(data), "\n")
}

// toYAMLPretty is helm's toYamlPretty: yaml.v3 with a two-space indent.
func toYAMLPretty(v interface{}) string {
	var data bytes.Buffer
	encoder := yamlv3.NewEncoder(&data)
	encoder.SetIndent(2)
	if err := encoder.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(data.String(), "\n")
}

func unmarshalYAML(data []byte, v interface{}) error { return yaml.Unmarshal(data, v) }

// decodeTable is helm's fromYaml / fromJson: a table, or {"Error": message}.
func decodeTable(unmarshal func([]byte, interface{}) error, str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

// decodeList is helm's fromYamlArray / fromJsonArray: a list, or [message].
func decodeList(unmarshal func([]byte, interface{}) error, str string) []interface{} {
	a := []interface{}{}
	if err := unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

// toTOML is helm's toToml: BurntSushi/toml's encoder; an error gives its message.
func toTOML(v interface{}) string {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(v); err != nil {
		return err.Error()
	}
	return b.String()
}

func fromTOML(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := toml.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func mustToJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(data)
}

// engineFuncs are the functions helm binds to the template set being rendered.
func engineFuncs(t *template.Template, includedNames map[string]int) template.FuncMap {
	return template.FuncMap{
		// include: execute a named template into a string (so it can be piped), with a bound
		// on recursion.
		"include": func(name string, data interface{}) (string, error) {
			if includedNames[name] > recursionMax {
				return "", fmt.Errorf("unable to execute template: rendering template has a nested reference name: %s", name)
			}
			includedNames[name]++
			defer func() { includedNames[name]-- }()
			var buf strings.Builder
			err := t.ExecuteTemplate(&buf, name, data)
			return buf.String(), err
		},
		// tpl: render a string as a template with the chart's named templates available, in
		// a clone of the set so its definitions do not leak.
		"tpl": func(text string, data interface{}) (string, error) {
			clone, err := t.Clone()
			if err != nil {
				return "", fmt.Errorf("cannot clone template: %w", err)
			}
			clone.Option("missingkey=zero")
			clone.Funcs(engineFuncs(clone, includedNames))
			parsed, err := clone.New(t.Name()).Parse(text)
			if err != nil {
				return "", fmt.Errorf("cannot parse template %q: %w", text, err)
			}
			var buf strings.Builder
			if err := parsed.Execute(&buf, data); err != nil {
				return "", fmt.Errorf("error during tpl function execution for %q: %w", text, err)
			}
			return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
		},
		// required: fail the render when the value is missing (nil or "").
		"required": func(warn string, val interface{}) (interface{}, error) {
			if val == nil {
				return val, errors.New(warnStart + warn + warnEnd)
			}
			if s, ok := val.(string); ok && s == "" {
				return val, errors.New(warnStart + warn + warnEnd)
			}
			return val, nil
		},
	}
}

// sortTemplates gives helm's parse order: deeper paths first, then names in reverse order.
// A `define` parsed later replaces an earlier one of the same name.
func sortTemplates(templates []Template) []Template {
	sorted := append([]Template(nil), templates...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].Name, sorted[j].Name
		ca, cb := strings.Count(a, "/"), strings.Count(b, "/")
		if ca != cb {
			return ca > cb
		}
		return a > b
	})
	return sorted
}

// renderTemplates is helm's Engine.render: every template parsed into one set (so every
// file's `define`s are visible to all), then every file not starting with `_` executed with
// missingkey=zero, `.Template` set to it, and "<no value>" removed from its output.
func renderTemplates(chart *Chart, top map[string]interface{}) (rendered map[string]string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rendering template failed: %v", r)
		}
	}()
	t := template.New("gotpl")
	t.Option("missingkey=zero")
	funcs := funcMap()
	for name, fn := range engineFuncs(t, map[string]int{}) {
		funcs[name] = fn
	}
	t.Funcs(funcs)

	ordered := sortTemplates(chart.Templates)
	for _, tpl := range ordered {
		if _, err := t.New(tpl.Name).Parse(tpl.Data); err != nil {
			return nil, cleanupParseError(tpl.Name, err)
		}
	}
	basePath := path.Join(chart.Metadata.Name, "templates")
	rendered = map[string]string{}
	for _, tpl := range ordered {
		if strings.HasPrefix(path.Base(tpl.Name), "_") {
			continue
		}
		top["Template"] = map[string]interface{}{"Name": tpl.Name, "BasePath": basePath}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, tpl.Name, top); err != nil {
			return nil, cleanupExecError(tpl.Name, err)
		}
		rendered[tpl.Name] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	return rendered, nil
}

// cleanupParseError reduces "template: NAME:LINE: function ... not defined" to helm's
// "parse error at (NAME:LINE): ...".
func cleanupParseError(name string, err error) error {
	tokens := strings.Split(err.Error(), ": ")
	if len(tokens) == 1 {
		return fmt.Errorf("parse error in (%s): %s", name, err)
	}
	return fmt.Errorf("parse error at (%s): %s", tokens[1], tokens[len(tokens)-1])
}

// cleanupExecError gives helm's "execution error at (NAME:LINE:COL): message" for `required`
// and `fail`, and the template error as is otherwise.
func cleanupExecError(name string, err error) error {
	var execErr template.ExecError
	if !errors.As(err, &execErr) {
		return err
	}
	tokens := strings.SplitN(err.Error(), ": ", 3)
	if len(tokens) != 3 {
		return fmt.Errorf("execution error in (%s): %s", name, err)
	}
	if parts := warnPattern.FindStringSubmatch(tokens[2]); len(parts) >= 2 {
		return fmt.Errorf("execution error at (%s): %s", tokens[1], parts[1])
	}
	// sprig's fail: the message is the last part of the chain.
	if strings.Contains(tokens[2], "error calling fail: ") {
		msg := tokens[2][strings.LastIndex(tokens[2], "error calling fail: ")+len("error calling fail: "):]
		return fmt.Errorf("execution error at (%s): %s", tokens[1], msg)
	}
	return err
}
