package config

import (
	"reflect"
	"strings"
)

// Variable is one environment variable Config reads, as --help shows it.
type Variable struct {
	Name    string
	Default string // empty when the variable has none
	Help    string
}

// Variables lists every variable Config reads, in the order of its fields,
// from the struct tags: the one place a variable is named, defaulted and
// described.
func Variables() []Variable {
	t := reflect.TypeFor[Config]()
	var vars []Variable
	for f := range t.Fields() {
		name := f.Tag.Get("env")
		if name == "" || name == "-" {
			continue
		}
		vars = append(vars, Variable{Name: name, Default: f.Tag.Get("envDefault"), Help: f.Tag.Get("help")})
	}
	return vars
}

// envName maps a Config field to its variable, for env's errors, which
// name the field.
func envName(field string) string {
	f, ok := reflect.TypeFor[Config]().FieldByName(field)
	if !ok {
		return field
	}
	if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); name != "" && name != "-" {
		return name
	}
	return field
}
