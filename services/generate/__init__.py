"""The generate service: prompt building and streamed answers from a pluggable LLM backend."""
