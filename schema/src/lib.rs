//! The reprise trace format: Cap'n Proto schema, TraceWriter and TraceReader.
