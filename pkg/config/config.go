// Package config binds command-line flags to HIVEMIND_* environment
// variables and prints a --help that documents every flag, its default and
// the variable that sets it.
//
// Precedence: a flag given on the command line wins over the environment,
// which wins over the flag's default.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// EnvPrefix starts every environment variable hivemind reads.
const EnvPrefix = "HIVEMIND_"

// EnvName is the environment variable that sets the flag called name:
// "grpc-addr" → "HIVEMIND_GRPC_ADDR".
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(name))
}

// ErrHelp is returned by Parse when -h or --help was asked for; the usage
// has already been printed.
var ErrHelp = flag.ErrHelp

// Parse parses args into fs, then fills every flag not given on the command
// line from its environment variable (looked up with lookupEnv; nil means
// os.LookupEnv). An unparseable value names the flag or the variable.
func Parse(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool)) error {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	if fs.Usage == nil {
		SetUsage(fs, fs.Name(), "")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		env := EnvName(f.Name)
		v, ok := lookupEnv(env)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
		}
	})
	return errors.Join(errs...)
}

// SetUsage installs a usage function on fs that prints synopsis, then every
// flag sorted by name with its default and environment variable.
func SetUsage(fs *flag.FlagSet, command, synopsis string) {
	fs.Usage = func() { PrintUsage(fs.Output(), fs, command, synopsis) }
}

// PrintUsage writes the help text for fs to w.
func PrintUsage(w io.Writer, fs *flag.FlagSet, command, synopsis string) {
	fmt.Fprintf(w, "Usage: %s [flags]\n", command)
	if synopsis != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(synopsis))
	}
	fmt.Fprintf(w, "\nFlags (each also read from the environment variable shown):\n")
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	for _, f := range flags {
		kind, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s", f.Name)
		if kind != "" {
			fmt.Fprintf(w, " %s", kind)
		}
		fmt.Fprintf(w, "\n      %s\n", usage)
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "      default: %s; env: %s\n", def, EnvName(f.Name))
	}
}
