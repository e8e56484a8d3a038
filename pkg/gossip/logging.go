package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
)

// logWriter turns memberlist's "[LEVEL] memberlist: message" lines into
// slog records. It also reads one line as an event: memberlist v0.7.0
// reports the suspicions it raises only in its log ("Suspect <name> has
// failed, no acks received"), and has no delegate for them.
type logWriter struct {
	log     *slog.Logger
	suspect func(name string)
}

func newMemberlistLogger(l *slog.Logger, suspect func(string)) *log.Logger {
	return log.New(&logWriter{log: l, suspect: suspect}, "", 0)
}

var levelTags = []struct {
	tag   string
	level slog.Level
}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}}

const (
	suspectPrefix = "Suspect "
	suspectSuffix = " has failed, no acks received"
)

func (w *logWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\n"))
	level := slog.LevelInfo
	for _, t := range levelTags {
		if rest, ok := strings.CutPrefix(line, t.tag); ok {
			level, line = t.level, strings.TrimSpace(rest)
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	if rest, ok := strings.CutPrefix(line, suspectPrefix); ok {
		if name, ok := strings.CutSuffix(rest, suspectSuffix); ok {
			w.suspect(name)
		}
	}
	w.log.Log(context.Background(), level, "memberlist: "+line)
	return len(p), nil
}
