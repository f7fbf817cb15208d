// Package wire is warren's public wire contract: every request and answer
// body, stream frame, error code and state name that crosses warren's HTTP
// API, and nothing else. The server encodes these types, the Go SDK
// (package client) decodes them, and the TypeScript and Python SDKs mirror
// them by name.
//
// It depends on the standard library only, so that any program can speak to
// warren without taking on the server: a test keeps it that way.
//
// Field names are the JSON names, in snake_case. Every field of a request is
// optional unless its comment says otherwise; the server fills defaults and
// answers a bad field with a 400 whose Error.Field names it.
package wire
