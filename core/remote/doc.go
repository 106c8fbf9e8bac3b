// Package remote reads OCI registry blobs lazily over HTTP range requests.
//
// A [Client] holds what is shared by every blob of a daemon: the HTTP
// transport (connection pool, TLS with verification on by default, client
// certificates), the credential source, the bearer tokens per scope and the
// resolved URL of every blob (the registry itself, or the object-storage
// location it redirects to). A [Blob] is one opened blob: it knows its size,
// splits large reads into ranged GETs that run in parallel, and reads ahead
// when it sees sequential access, so that a registry far away still fills
// the link. Blob implements core.Source, which is what caches consume.
//
// The protocol follows overlaybd's "v2" registry client (see the project's
// REMOTE.md): blob URL = repoBlobUrl + "/" + digest; size discovery and
// auth challenges are GETs with "Range: bytes=0-0"; Basic and Bearer
// (WWW-Authenticate) schemes; credentials re-read from their source on every
// authentication round, so that rotated credentials are picked up after a
// 401 or 403. Differences from upstream, all on the side of safety:
//
//   - server certificates are verified unless the registry's host is listed
//     as insecure;
//   - an Authorization header is never sent to a host other than the one it
//     was obtained for (redirect targets get none);
//   - every response is checked: status, Content-Range against the range
//     asked for, body length; a response that fails a check is retried with
//     backoff and never returned as data;
//   - credentials and signed URL query strings never appear in logs or
//     errors.
//
// The package also holds the background downloader ([Downloader]), which
// fetches a whole blob into its layer directory, checks its digest and lets
// reads switch to the local copy.
package remote
