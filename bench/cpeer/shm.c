/*
 * shm.c: the C floor over shared memory. For each connection the server
 * creates a sealed memfd holding two single-producer single-consumer byte
 * rings, requests and replies, and passes it over the Unix socket with
 * SCM_RIGHTS; after that the socket only tells either side that the other
 * is gone. Both sides wait by spinning, so an open connection keeps a CPU
 * busy on each side.
 *
 *   shm server SOCKET echo|sink|corrupt THREADS
 *       echo answers each message with the same message; sink reads
 *       messages and answers only an empty one (the end of a stream);
 *       corrupt is echo with the first byte of each reply flipped, for
 *       testing the client's check.
 *
 *   shm client SOCKET persistent|connect|stream SIZE CONNS WARMUP_MS DURATION_MS OUTFILE SERVER_PID [OPS]
 *       The client stamps a sequence number into the first bytes of each
 *       request and exits with status 1 when a reply does not carry it
 *       back or, in the warm-up, differs from its request at all.
 *
 * The rest of both commands is harness.h's. A message is its payload length
 * (8 bytes, native-endian) and its payload; one larger than a ring streams
 * through it in pieces. Built by bench at run time with `cc -O2 -pthread`.
 */
#define _GNU_SOURCE
#define PROG "shm"
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "harness.h"

#define LINE 64                   /* cache line: indices written by different sides live apart */
#define RING_SIZE (128 << 10)     /* bytes per ring, a power of two: about a socket's buffer */
#define PIECE (32 << 10)          /* most bytes copied between index updates */
#define DATA_OFF 4096             /* the rings' bytes start on the second page */
#define MAP_SIZE (DATA_OFF + 2 * RING_SIZE)
#define WATCH_SPINS (1u << 15)    /* spins between looks at the socket */

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
	       "atomics shared between processes must be lock-free");

/* One ring's indices: free-running byte counts, so head - tail is the fill. */
struct ctl {
	_Alignas(LINE) _Atomic uint64_t head; /* bytes written, moved by the producer */
	_Alignas(LINE) _Atomic uint64_t tail; /* bytes read, moved by the consumer */
};

/* The start of the mapping. A fresh memfd reads as zeros: every index starts at 0. */
struct shm {
	struct ctl req, rep;
	_Alignas(LINE) _Atomic int done; /* set by the client after its last message */
};

_Static_assert(sizeof(struct shm) <= DATA_OFF, "the indices overlap the rings");

/* One side's end of one ring, in its own memory. */
struct end {
	char *data;
	_Atomic uint64_t *mine;   /* the index this side moves */
	_Atomic uint64_t *theirs; /* the other side's */
	uint64_t pos;             /* this side's index */
	uint64_t seen;            /* the other side's, as last loaded */
	int producer;
	int fd;                   /* the connection's socket */
	_Atomic int *done;        /* the server's ends: the client's flag */
};

static void end_init(struct end *e, char *base, struct shm *s, int req, int producer, int fd, int server)
{
	struct ctl *c = req ? &s->req : &s->rep;
	e->data = base + DATA_OFF + (req ? 0 : RING_SIZE);
	e->mine = producer ? &c->head : &c->tail;
	e->theirs = producer ? &c->tail : &c->head;
	e->pos = e->seen = 0;
	e->producer = producer;
	e->fd = fd;
	e->done = server ? &s->done : NULL;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/*
 * peer_gone reports whether the other side has closed the socket. Neither
 * writes to it after the set-up, so readable means EOF or an error.
 */
static int peer_gone(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int n = poll(&p, 1, 0);
	return n > 0 || (n < 0 && errno != EINTR);
}

static size_t avail(const struct end *e)
{
	return e->producer ? RING_SIZE - (size_t)(e->pos - e->seen) : (size_t)(e->seen - e->pos);
}

/*
 * wait_avail spins until e can move at least one byte (room to write, or
 * bytes to read) and returns how many; 0 when the other side is gone or,
 * on the server, the client is done.
 */
static size_t wait_avail(struct end *e)
{
	size_t n = avail(e);
	for (unsigned spins = 1; n == 0; spins++) {
		e->seen = atomic_load_explicit(e->theirs, memory_order_acquire);
		if ((n = avail(e)) != 0)
			break;
		if (e->done && atomic_load_explicit(e->done, memory_order_acquire))
			return 0;
		if (spins % WATCH_SPINS == 0) {
			if (peer_gone(e->fd))
				return 0;
			/* A long wait means the peer is not running: on a machine
			 * with more spinners than cores, let it have this one. */
			sched_yield();
		}
		cpu_relax();
	}
	return n;
}

/* The bytes e moves next: at most n of the ready ones, within the ring's end and one piece. */
static size_t piece(const struct end *e, size_t ready, size_t n)
{
	size_t off = e->pos & (RING_SIZE - 1);
	if (n > ready)
		n = ready;
	if (n > RING_SIZE - off)
		n = RING_SIZE - off;
	if (n > PIECE)
		n = PIECE;
	return n;
}

static void commit(struct end *e)
{
	atomic_store_explicit(e->mine, e->pos, memory_order_release);
}

/*
 * ring_copy moves n bytes into (producer) or out of (consumer) the ring,
 * committing each piece so that the other side works on it meanwhile, or,
 * without eager, only when it must wait (a message's length travels with
 * the start of its payload). It returns -1 when wait_avail gives up.
 */
static int ring_copy(struct end *e, void *buf, size_t n, int eager)
{
	char *b = buf;
	while (n > 0) {
		size_t k = avail(e);
		if (k == 0) {
			commit(e);
			if ((k = wait_avail(e)) == 0)
				return -1;
		}
		k = piece(e, k, n);
		char *r = e->data + (e->pos & (RING_SIZE - 1));
		if (e->producer)
			memcpy(r, b, k);
		else
			memcpy(b, r, k);
		b += k;
		n -= k;
		e->pos += k;
		if (eager)
			commit(e);
	}
	return 0;
}

static int send_message(struct end *e, const char *payload, size_t len)
{
	uint64_t n = len;
	if (ring_copy(e, &n, sizeof n, 0) || ring_copy(e, (char *)payload, len, 1))
		return -1;
	if (len == 0)
		commit(e);
	return 0;
}

/* Reads one message's length; -1 when the other side is gone or done. */
static long recv_length(struct end *e)
{
	uint64_t n;
	if (ring_copy(e, &n, sizeof n, 0))
		return -1;
	if (n > MAX_MESSAGE) {
		fprintf(stderr, PROG ": message of %llu bytes\n", (unsigned long long)n);
		return -1;
	}
	return (long)n;
}

static int recv_payload(struct end *e, char *buf, size_t len)
{
	if (ring_copy(e, buf, len, 1))
		return -1;
	if (len == 0)
		commit(e);
	return 0;
}

/* ---- server ---- */

enum { ECHO, SINK, CORRUPT };

static int server_mode;

static int send_fd(int sock, int fd)
{
	char byte = 0;
	struct iovec iov = {&byte, 1};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} u;
	memset(&u, 0, sizeof u);
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	ssize_t n;
	while ((n = sendmsg(sock, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	return n == 1 ? 0 : -1;
}

/*
 * new_mapping creates the connection's memfd, sealed at its size so that
 * the client can map it without fearing SIGBUS from a shrink.
 */
static int new_mapping(char **base)
{
	int fd = memfd_create("pktipc-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -1;
	if (ftruncate(fd, MAP_SIZE) || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		goto fail;
	*base = mmap(NULL, MAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (*base == MAP_FAILED)
		goto fail;
	return fd;
fail:
	close(fd);
	return -1;
}

static void serve_conn(int fd)
{
	char *base;
	int mfd = new_mapping(&base);
	if (mfd < 0) {
		fprintf(stderr, PROG ": memfd: %s\n", strerror(errno));
		close(fd);
		return;
	}
	int sent = send_fd(fd, mfd);
	close(mfd);
	if (sent) {
		munmap(base, MAP_SIZE);
		close(fd);
		return;
	}
	struct shm *s = (struct shm *)base;
	struct end req, rep;
	end_init(&req, base, s, 1, 0, fd, 1);
	end_init(&rep, base, s, 0, 1, fd, 1);
	char *msg = NULL;
	size_t cap = 0;
	for (;;) {
		long n = recv_length(&req);
		if (n < 0)
			break;
		if ((size_t)n > cap) {
			free(msg);
			cap = (size_t)n;
			if (!(msg = malloc(cap)))
				die("malloc");
		}
		if (recv_payload(&req, msg, (size_t)n))
			break;
		if (server_mode == SINK && n > 0)
			continue;
		if (server_mode == CORRUPT && n > 0)
			msg[0] ^= 1;
		if (send_message(&rep, msg, (size_t)n))
			break;
	}
	free(msg);
	munmap(base, MAP_SIZE);
	close(fd);
}

static int server(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	if (!strcmp(argv[3], "echo"))
		server_mode = ECHO;
	else if (!strcmp(argv[3], "sink"))
		server_mode = SINK;
	else if (!strcmp(argv[3], "corrupt"))
		server_mode = CORRUPT;
	else
		return 2;
	return serve(argv[2], atoi(argv[4]));
}

/* ---- client ---- */

struct conn {
	int fd;
	char *base;
	struct end req, rep;
};

static int recv_fd(int sock)
{
	char byte;
	struct iovec iov = {&byte, 1};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
	ssize_t n;
	while ((n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	struct cmsghdr *c = n == 1 ? CMSG_FIRSTHDR(&m) : NULL;
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof fd);
	return fd;
}

/* conn_open dials the server and maps the memfd it sends; -1 on failure. */
static int conn_open(struct conn *c)
{
	if ((c->fd = dial()) < 0)
		return -1;
	int mfd = recv_fd(c->fd);
	if (mfd < 0)
		goto fail;
	struct stat st;
	int seals = fcntl(mfd, F_GET_SEALS);
	if (fstat(mfd, &st) || st.st_size != MAP_SIZE || seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
		close(mfd);
		goto fail;
	}
	c->base = mmap(NULL, MAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	close(mfd);
	if (c->base == MAP_FAILED)
		goto fail;
	struct shm *s = (struct shm *)c->base;
	end_init(&c->req, c->base, s, 1, 1, c->fd, 0);
	end_init(&c->rep, c->base, s, 0, 0, c->fd, 0);
	return 0;
fail:
	close(c->fd);
	return -1;
}

static void conn_close(struct conn *c)
{
	atomic_store_explicit(&((struct shm *)c->base)->done, 1, memory_order_release);
	munmap(c->base, MAP_SIZE);
	close(c->fd);
}

/* stamp writes seq into the first bytes of req, as many as it has up to 8. */
static void stamp(char *req, uint64_t seq)
{
	memcpy(req, &seq, msg_size < sizeof seq ? msg_size : sizeof seq);
}

/*
 * check exits unless rep is req's echo: its stamp always, every byte in
 * the warm-up, where the comparison does not lengthen the measured window.
 */
static void check(const char *req, const char *rep, uint64_t seq, int p)
{
	size_t k = msg_size < sizeof seq ? msg_size : sizeof seq;
	if (memcmp(rep, req, k) != 0) {
		uint64_t got = 0;
		memcpy(&got, rep, k);
		fprintf(stderr, PROG ": reply %llu carries stamp %llu\n", (unsigned long long)seq,
			(unsigned long long)got);
		exit(1);
	}
	if (p == WARMUP && memcmp(rep, req, msg_size) != 0) {
		fprintf(stderr, PROG ": reply %llu differs from its request\n", (unsigned long long)seq);
		exit(1);
	}
}

static void *client_thread(void *arg)
{
	struct client *c = arg;
	wait_gate();
	char *req = malloc(msg_size ? msg_size : 1), *rep = malloc(msg_size ? msg_size : 1);
	if (!req || !rep)
		die("malloc");
	for (size_t j = 0; j < msg_size; j++)
		req[j] = 'a' + (char)(j % 26);
	struct conn conn;
	int open = 0;
	if (client_mode != CONNECT) {
		if (conn_open(&conn)) {
			c->errors++;
			c->err = "connect";
			goto out;
		}
		open = 1;
	}
	for (uint64_t seq = 1;; seq++) {
		int p = next_phase(c);
		if (p == STOP)
			break;
		stamp(req, seq);
		int64_t t0 = now_ns();
		if (client_mode == CONNECT) {
			if (conn_open(&conn)) {
				c->errors++;
				c->err = "connect";
				break;
			}
			open = 1;
		}
		if (send_message(&conn.req, req, msg_size)) {
			c->errors++;
			c->err = "write";
			break;
		}
		long n = 0;
		if (client_mode != STREAM) {
			n = recv_length(&conn.rep);
			if (n >= 0 && (size_t)n != msg_size) {
				fprintf(stderr, PROG ": reply %llu of %ld bytes, want %zu\n",
					(unsigned long long)seq, n, msg_size);
				exit(1);
			}
			if (n < 0 || recv_payload(&conn.rep, rep, msg_size)) {
				c->errors++;
				c->err = "read";
				break;
			}
		}
		if (client_mode == CONNECT) {
			conn_close(&conn);
			open = 0;
		}
		int64_t t1 = now_ns();
		if (client_mode != STREAM)
			check(req, rep, seq, p);
		if (p == MEASURE) {
			record(c, t1 - t0);
			c->bytes += (long long)msg_size + n;
		}
	}
	if (client_mode == STREAM && open && !c->err) {
		/* An empty message; the sink answers it once all before it is read. */
		if (send_message(&conn.req, NULL, 0) || recv_length(&conn.rep) != 0 || recv_payload(&conn.rep, NULL, 0)) {
			c->errors++;
			c->err = "stream ack";
		}
	}
	if (open)
		conn_close(&conn);
out:
	free(req);
	free(rep);
	return NULL;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2 && !strcmp(argv[1], "server"))
		return server(argc, argv);
	if (argc >= 2 && !strcmp(argv[1], "client"))
		return client(argc, argv);
	fprintf(stderr, "usage: shm server SOCKET echo|sink|corrupt THREADS\n"
			"       shm client SOCKET persistent|connect|stream SIZE CONNS WARMUP_MS DURATION_MS OUTFILE SERVER_PID [OPS]\n");
	return 2;
}
