package dnsserver

import "github.com/hivemind/hivemind/services/dnsprocessor/internal/processor"

var _ processor.Processor = (*Handler)(nil)
