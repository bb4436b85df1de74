/*
 * pktipc-fsmonitor's hook, fast path: git's fsmonitor hook (version 2)
 * as a small C program, built by `pktipc-fsmonitor build-hook`.
 *
 * git runs the hook on every status. The Go command's hook costs a Go
 * process start; this one asks a running daemon at .git's socket and
 * prints its reply, and hands every other case to the Go command (which
 * finds the repository through git, starts a daemon, honours
 * fsmonitor.socketDir on remote filesystems, and falls back to a trivial
 * reply): no repository layout it does not recognise, no daemon that does
 * not answer, no reply it cannot vouch for is handled here.
 *
 * The exchange is git's simple-ipc: the token as pkt-line data packets and
 * a flush; the reply as data packets and a flush.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef PKTIPC_FSMONITOR_BIN
#define PKTIPC_FSMONITOR_BIN "pktipc-fsmonitor"
#endif

#define SOCKET_NAME "fsmonitor--daemon.ipc"
#define MAX_REPLY (256u << 20)
#define MAX_PAYLOAD 65516
#define QUERY_TIMEOUT_S 10

static char *argv0_version, *argv0_token;

/* fallback runs the Go command's hook, which handles every case. */
static void fallback(void)
{
	execl(PKTIPC_FSMONITOR_BIN, PKTIPC_FSMONITOR_BIN, "hook", argv0_version, argv0_token, (char *)NULL);
	fprintf(stderr, "warning: pktipc-fsmonitor hook: cannot run %s: %s; git will scan the worktree\n",
		PKTIPC_FSMONITOR_BIN, strerror(errno));
	/* git's "no token yet", then "everything may have changed". */
	fwrite("builtin:fake\0/\0", 1, 15, stdout);
	exit(0);
}

/* remote reports whether path lies on a filesystem where the socket may
 * live elsewhere (fsmonitor.socketDir), as the Go command decides. */
static int remote(const char *path)
{
	struct statfs st;
	if (statfs(path, &st) != 0)
		return 1;
	switch ((unsigned long)st.f_type) {
	case 0x6969:     /* NFS */
	case 0x517B:     /* SMB */
	case 0xFF534D42: /* CIFS */
	case 0xFE534D42: /* SMB2 */
	case 0x5346414F: /* AFS */
	case 0x6B414653: /* AFS (kAFS) */
	case 0x73757245: /* Coda */
	case 0x65735546: /* FUSE */
	case 0x4d44:     /* FAT */
	case 0x5346544e: /* NTFS */
		return 1;
	}
	return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_full(int fd, char *p, size_t n)
{
	while (n > 0) {
		ssize_t r = read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int main(int argc, char **argv)
{
	if (argc != 3 || strcmp(argv[1], "2") != 0) {
		/* The Go command explains what is wrong. */
		argv0_version = argc > 1 ? argv[1] : "";
		argv0_token = argc > 2 ? argv[2] : "";
		if (argc != 3) {
			execl(PKTIPC_FSMONITOR_BIN, PKTIPC_FSMONITOR_BIN, "hook", (char *)NULL);
			return 2;
		}
		fallback();
	}
	argv0_version = argv[1];
	argv0_token = argv[2];
	if (getenv("GIT_DIR") || getenv("GIT_WORK_TREE"))
		fallback();

	struct stat st;
	if (lstat(".git", &st) != 0 || !S_ISDIR(st.st_mode) || remote(".git"))
		fallback();

	/* .git/<name> is short enough for sun_path whatever the worktree's
	 * path, since it is relative to the directory git runs us in. */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fallback();
	/* Before connect: a Unix socket's connect waits on a full backlog
	 * (a wedged daemon) for as long as SO_SNDTIMEO allows. */
	struct timeval tv = {.tv_sec = QUERY_TIMEOUT_S};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strcpy(sa.sun_path, ".git/" SOCKET_NAME);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
		fallback(); /* no daemon, or a wedged one: the Go hook takes over */

	/* The request: git's first token may be a V1 timestamp; the daemon
	 * answers anything but its own tokens trivially. An empty one asks as
	 * git does when it has none. */
	const char *req = argv[2][0] ? argv[2] : "builtin:fake";
	size_t n = strlen(req);
	if (n > MAX_PAYLOAD)
		fallback();
	/* One write: the server serves a request that is whole when it
	 * accepts the connection without handing it to an event loop. */
	char *msg = malloc(n + 9);
	if (!msg)
		fallback();
	snprintf(msg, 5, "%04zx", n + 4);
	memcpy(msg + 4, req, n);
	memcpy(msg + 4 + n, "0000", 4);
	if (write_all(fd, msg, n + 8))
		fallback();
	free(msg);

	size_t cap = 1 << 16, len = 0;
	char *reply = malloc(cap);
	if (!reply)
		fallback();
	for (;;) {
		char h[4];
		if (read_full(fd, h, 4))
			fallback();
		int v = 0;
		for (int i = 0; i < 4; i++) {
			int d = hexval(h[i]);
			if (d < 0)
				fallback();
			v = v << 4 | d;
		}
		if (v == 0)
			break; /* flush: the reply is whole */
		if (v < 4 || v > MAX_PAYLOAD + 4)
			fallback();
		size_t m = (size_t)v - 4;
		if (len + m > MAX_REPLY)
			fallback();
		if (len + m > cap) {
			while (len + m > cap)
				cap *= 2;
			char *r = realloc(reply, cap);
			if (!r)
				fallback();
			reply = r;
		}
		if (read_full(fd, reply + len, m))
			fallback();
		len += m;
	}
	close(fd);
	/* git keeps what precedes the first NUL as its next token: let
	 * nothing but a daemon's reply through. */
	if (len < 8 || memcmp(reply, "builtin:", 8) != 0 || !memchr(reply, 0, len))
		fallback();
	if (write_all(1, reply, len)) {
		fprintf(stderr, "error: pktipc-fsmonitor hook: writing the reply: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
