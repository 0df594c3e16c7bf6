/*
 * loadgen.c -- closed-loop TCP echo load generator for zerg's benchmarks.
 *
 * What it measures: N connections, each keeping D messages of S bytes in
 * flight against an echo server.  A message is complete when S more bytes
 * came back on its connection (bytes are counted per connection, so message
 * boundaries need not survive the trip); completing one queues the next
 * (closed loop).  Latency is send-to-full-echo, from a FIFO of D send
 * timestamps per connection.  Over the measured window it reports messages/s,
 * MB/s (1 MB = 1e6 bytes of payload, one direction), p50/p99 latency, and the
 * CPU time the server process consumed (utime/stime from /proc/PID/stat),
 * per message.  Output: one JSON object on stdout.
 *
 * Goal: never be the bottleneck.  One thread drives every connection through
 * one io_uring: multishot recv into a provided buffer ring of large buffers
 * (contents are only looked at with --verify), sends of everything queued on
 * a connection in one SQE, and one io_uring_enter per loop iteration for all
 * connections.  No syscall per message.  Sockets never block the thread:
 * io_uring retries them internally.  The loadgen's own CPU use is reported
 * (loadgen_cpu_util) so saturation is visible.
 *
 * Plan: at most one send in flight per connection (bytes leave in order, so
 * --verify can check the echoed byte stream); messages queued while a send
 * runs are coalesced into the next one.  The payload is a fixed pattern
 * (byte at stream offset i is i % 251), so sends need no per-message copy.
 *
 * --idle (scenario C1): warm the server up with 64 MiB of echo traffic (so
 * fixed pools are resident), read its VmRSS, open N connections in batches,
 * do one S-byte echo round trip on each (proof that the server accepted and
 * set it up), wait the warm-up time, and report the VmRSS growth per
 * connection.
 *
 * Build: gcc -O2 -o loadgen loadgen.c /usr/lib/x86_64-linux-gnu/liburing.a
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif

#define OP_RECV 1ULL
#define OP_SEND 2ULL
#define PATTERN_MOD 251
#define MAX_SEND (256u * 1024u)      /* bytes per send SQE */
#define NBUFS 1024u                   /* provided buffers (power of two) */
#define BUF_SIZE (64u * 1024u)        /* bytes per provided buffer */
#define BGID 7
#define HIST_NS 100ull                /* histogram bucket width */
#define HIST_BUCKETS 1000000u         /* 100 ns .. 100 ms; slower lands in the last */

struct conn {
    int fd;
    int dead;
    int send_inflight;
    int recv_armed;
    int starved;                      /* recv ended with ENOBUFS: re-arm later */
    uint64_t queued;                  /* bytes of messages issued */
    uint64_t sent;                    /* bytes the kernel took */
    uint64_t recvd;                   /* bytes echoed back */
    uint64_t done;                    /* messages completed */
    uint64_t *ts;                     /* FIFO of send timestamps, D entries */
    unsigned ts_head, ts_count;
};

static struct {
    const char *host;
    int port;
    unsigned conns, depth, size;
    double duration, warmup;
    int server_pid;
    int idle, verify, spin;
    unsigned batch;
} opt = {"127.0.0.1", 0, 100, 1, 64, 2.0, 0.5, 0, 0, 0, 0, 200};

static unsigned char *pattern;        /* MAX_SEND + PATTERN_MOD bytes */
static uint32_t *hist;
static uint64_t hist_total;
static uint64_t errors, verify_errors;
static int measuring, stopping;
static unsigned nstarved;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void die(const char *what, int err)
{
    printf("{\"error\": \"%s: %s\"}\n", what, strerror(err));
    fflush(stdout);
    exit(2);
}

/* ---------------------------------------------------------------- server stats */

static int read_cpu(long long *ut, long long *st)
{
    char path[64], buf[4096];
    FILE *f;
    size_t n;
    char *p;
    int field;

    *ut = *st = -1;
    if (opt.server_pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/stat", opt.server_pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    p = strrchr(buf, ')');            /* comm may contain spaces */
    if (!p)
        return -1;
    p += 2;                           /* field 3 (state) starts here */
    for (field = 3; field < 14 && p; field++) {
        p = strchr(p, ' ');
        if (p)
            p++;
    }
    if (!p || sscanf(p, "%lld %lld", ut, st) != 2)
        return -1;
    return 0;
}

static long read_rss_kb(void)
{
    char path[64], line[256];
    FILE *f;
    long kb = -1;

    if (opt.server_pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/status", opt.server_pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* ---------------------------------------------------------------- sockets */

static int dial(void)
{
    struct sockaddr_in sa;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)opt.port);
    if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1) {
        close(fd);
        return -EINVAL;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static void raise_nofile(unsigned need)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)need + 32) {
        printf("{\"error\": \"RLIMIT_NOFILE is %llu, %u connections need more\"}\n",
               (unsigned long long)rl.rlim_cur, need);
        exit(2);
    }
}

/* ---------------------------------------------------------------- histogram */

static void hist_add(uint64_t ns)
{
    uint64_t b = ns / HIST_NS;
    if (b >= HIST_BUCKETS)
        b = HIST_BUCKETS - 1;
    hist[b]++;
    hist_total++;
}

static double hist_pct(double q)
{
    uint64_t want, seen = 0;
    unsigned i;

    if (!hist_total)
        return 0.0;
    want = (uint64_t)(q * (double)hist_total);
    if (want >= hist_total)
        want = hist_total - 1;
    for (i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen > want)
            return ((double)i + 0.5) * HIST_NS / 1000.0;
    }
    return (double)HIST_BUCKETS * HIST_NS / 1000.0;
}

/* ---------------------------------------------------------------- closed loop */

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static unsigned br_mask, br_pending;
static unsigned char *bufs;
static struct conn *conns;
static uint64_t window_msgs;

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (!sqe) {
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    if (!sqe)
        die("io_uring_get_sqe", EBUSY);
    return sqe;
}

static void arm_recv(unsigned i)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_recv_multishot(sqe, conns[i].fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, ((uint64_t)i << 8) | OP_RECV);
    conns[i].recv_armed = 1;
    if (conns[i].starved) {
        conns[i].starved = 0;
        nstarved--;
    }
}

static void kick_send(unsigned i)
{
    struct conn *c = &conns[i];
    struct io_uring_sqe *sqe;
    uint64_t left = c->queued - c->sent;
    unsigned len = left > MAX_SEND ? MAX_SEND : (unsigned)left;

    if (c->send_inflight || !len || c->dead)
        return;
    sqe = sqe_get();
    io_uring_prep_send(sqe, c->fd, pattern + c->sent % PATTERN_MOD, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ((uint64_t)i << 8) | OP_SEND);
    c->send_inflight = 1;
}

static void issue(struct conn *c, uint64_t t)
{
    c->ts[(c->ts_head + c->ts_count) % opt.depth] = t;
    c->ts_count++;
    c->queued += opt.size;
}

static void kill_conn(struct conn *c)
{
    if (!c->dead) {
        c->dead = 1;
        errors++;
        shutdown(c->fd, SHUT_RDWR);
    }
}

static void give_back(unsigned bid)
{
    io_uring_buf_ring_add(br, bufs + (size_t)bid * BUF_SIZE, BUF_SIZE,
                          (unsigned short)bid, br_mask, (int)br_pending);
    br_pending++;
}

static void on_recv(unsigned i, int res, unsigned flags)
{
    struct conn *c = &conns[i];

    if (res > 0 && (flags & IORING_CQE_F_BUFFER)) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        uint64_t complete, t;

        if (opt.verify) {
            unsigned char *data = bufs + (size_t)bid * BUF_SIZE;
            unsigned off = (unsigned)(c->recvd % PATTERN_MOD), pos = 0;
            while (pos < (unsigned)res) {
                unsigned take = (unsigned)res - pos;
                if (take > MAX_SEND)
                    take = MAX_SEND;
                if (memcmp(data + pos, pattern + off, take) != 0)
                    verify_errors++;
                pos += take;
                off = (off + take) % PATTERN_MOD;
            }
        }
        give_back(bid);
        c->recvd += (unsigned)res;
        complete = c->recvd / opt.size - c->done;
        if (complete > c->ts_count) {
            verify_errors++;          /* more echoed than sent: a broken server */
            complete = c->ts_count;
        }
        if (complete) {
            t = now_ns();
            while (complete--) {
                uint64_t sent_at = c->ts[c->ts_head];
                c->ts_head = (c->ts_head + 1) % opt.depth;
                c->ts_count--;
                c->done++;
                if (measuring) {
                    hist_add(t - sent_at);
                    window_msgs++;
                }
                if (!stopping)
                    issue(c, t);
            }
            kick_send(i);
        }
    }
    if (!(flags & IORING_CQE_F_MORE)) {
        c->recv_armed = 0;
        if (c->dead)
            return;
        if (res == -ENOBUFS) {
            c->starved = 1;         /* re-armed once buffers are back */
            nstarved++;
        }
        else if (res > 0 || res == -EAGAIN || res == -EINTR)
            arm_recv(i);
        else
            kill_conn(c);             /* 0: the server closed; < 0: error */
    }
}

static void on_send(unsigned i, int res)
{
    struct conn *c = &conns[i];

    c->send_inflight = 0;
    if (res == -EAGAIN || res == -EINTR)
        res = 0;
    else if (res < 0) {
        kill_conn(c);
        return;
    }
    c->sent += (unsigned)res;
    kick_send(i);
}

static int run_loop(void)
{
    struct io_uring_params p;
    struct io_uring_buf_reg reg;
    size_t br_bytes = NBUFS * sizeof(struct io_uring_buf);
    unsigned i, entries = 4096;
    long long ut0, st0, ut1, st1;
    double self0 = 0, self1 = 0, tck = (double)sysconf(_SC_CLK_TCK);
    uint64_t t_start, t_measure = 0, t_end = 0, t;
    int ret, have_cpu;
    double secs;

    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = 65536;
    ret = io_uring_queue_init_params(entries, &ring, &p);
    if (ret < 0) {                    /* older kernel: no DEFER_TASKRUN */
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = 65536;
        ret = io_uring_queue_init_params(entries, &ring, &p);
    }
    if (ret < 0)
        die("io_uring_queue_init", -ret);

    bufs = mmap(NULL, (size_t)NBUFS * BUF_SIZE, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    br = mmap(NULL, br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bufs == MAP_FAILED || br == MAP_FAILED)
        die("mmap", errno);
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long long)(uintptr_t)br;
    reg.ring_entries = NBUFS;
    reg.bgid = BGID;
    ret = io_uring_register_buf_ring(&ring, &reg, 0);
    if (ret < 0)
        die("io_uring_register_buf_ring", -ret);
    br_mask = io_uring_buf_ring_mask(NBUFS);
    io_uring_buf_ring_init(br);
    for (i = 0; i < NBUFS; i++)
        give_back(i);
    io_uring_buf_ring_advance(br, (int)br_pending);
    br_pending = 0;

    conns = calloc(opt.conns, sizeof(*conns));
    if (!conns)
        die("calloc", ENOMEM);
    for (i = 0; i < opt.conns; i++) {
        int fd = dial();
        if (fd < 0)
            die("connect", -fd);
        conns[i].fd = fd;
        conns[i].ts = calloc(opt.depth, sizeof(uint64_t));
        if (!conns[i].ts)
            die("calloc", ENOMEM);
    }

    t_start = now_ns();
    for (i = 0; i < opt.conns; i++) {
        unsigned d;
        arm_recv(i);
        for (d = 0; d < opt.depth; d++)
            issue(&conns[i], t_start);
        kick_send(i);
    }

    ut0 = st0 = ut1 = st1 = -1;
    for (;;) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {0, 20 * 1000 * 1000};
        unsigned head, seen = 0;

        if (opt.spin) {
            ret = io_uring_submit_and_get_events(&ring);
            if (ret < 0 && ret != -EINTR && ret != -EBUSY)
                die("io_uring_submit_and_get_events", -ret);
        } else {
            ret = io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, NULL);
            if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY)
                die("io_uring_submit_and_wait_timeout", -ret);
        }
        io_uring_for_each_cqe(&ring, head, cqe) {
            uint64_t ud = cqe->user_data;
            unsigned idx = (unsigned)(ud >> 8);
            seen++;
            if ((ud & 0xff) == OP_RECV)
                on_recv(idx, cqe->res, cqe->flags);
            else
                on_send(idx, cqe->res);
        }
        io_uring_cq_advance(&ring, seen);
        if (br_pending) {
            io_uring_buf_ring_advance(br, (int)br_pending);
            br_pending = 0;
        }
        if (nstarved)
            for (i = 0; i < opt.conns; i++)
                if (conns[i].starved && !conns[i].dead)
                    arm_recv(i);

        t = now_ns();
        if (!measuring && !t_measure && t - t_start >= (uint64_t)(opt.warmup * 1e9)) {
            measuring = 1;
            t_measure = t;
            window_msgs = 0;
            read_cpu(&ut0, &st0);
            self0 = self_cpu_s();
        } else if (measuring && t - t_measure >= (uint64_t)(opt.duration * 1e9)) {
            measuring = 0;
            stopping = 1;
            t_end = t;
            read_cpu(&ut1, &st1);
            self1 = self_cpu_s();
            break;
        }
    }

    secs = (double)(t_end - t_measure) / 1e9;
    have_cpu = ut0 >= 0 && ut1 >= 0;
    {
        double us = have_cpu ? (double)(ut1 - ut0) / tck : -1.0;
        double ss = have_cpu ? (double)(st1 - st0) / tck : -1.0;
        double m = window_msgs ? (double)window_msgs : 1.0;
        unsigned alive = 0;

        for (i = 0; i < opt.conns; i++)
            alive += !conns[i].dead;
        printf("{\"mode\": \"echo\", \"conns\": %u, \"alive\": %u, \"depth\": %u, \"size\": %u,"
               " \"duration_s\": %.6f, \"msgs\": %llu, \"msgs_per_s\": %.1f,"
               " \"mb_per_s\": %.3f, \"p50_us\": %.1f, \"p99_us\": %.1f,"
               " \"errors\": %llu, \"verify\": %s, \"verify_errors\": %llu,"
               " \"server_cpu_user_s\": %.3f, \"server_cpu_sys_s\": %.3f,"
               " \"server_cpu_util\": %.3f, \"loadgen_cpu_util\": %.3f,"
               " \"cpu_us_per_msg\": {\"user\": %.3f, \"sys\": %.3f, \"total\": %.3f}}\n",
               opt.conns, alive, opt.depth, opt.size, secs,
               (unsigned long long)window_msgs, (double)window_msgs / secs,
               (double)window_msgs * opt.size / secs / 1e6, hist_pct(0.50), hist_pct(0.99),
               (unsigned long long)errors, opt.verify ? "true" : "false",
               (unsigned long long)verify_errors,
               us, ss, have_cpu ? (us + ss) / secs : -1.0, (self1 - self0) / secs,
               have_cpu ? us * 1e6 / m : -1.0, have_cpu ? ss * 1e6 / m : -1.0,
               have_cpu ? (us + ss) * 1e6 / m : -1.0);
    }
    fflush(stdout);
    for (i = 0; i < opt.conns; i++)
        close(conns[i].fd);
    return 0;
}

/* ---------------------------------------------------------------- idle (C1) */

static int recv_exactly(int fd, unsigned size)
{
    unsigned got = 0;
    ssize_t n;
    static unsigned char in[65536];

    while (got < size) {
        n = recv(fd, in, sizeof(in), 0);
        if (n <= 0)
            return -1;
        got += (unsigned)n;
    }
    return 0;
}

#define WARM_CONNS 64
#define WARM_ROUNDS 128
#define WARM_SIZE 16384u
#define IDLE_DEADLINE_NS (60ull * 1000000000ull)

static int run_idle(void)
{
    struct timeval tv = {5, 0};
    int *fds = calloc(opt.conns, sizeof(int));
    unsigned i, j, open_ok = 0;
    long before, after;
    uint64_t t0, t1;
    int warm[WARM_CONNS];

    if (!fds || opt.size > 4096)
        die("idle mode", EINVAL);
    /* Warm-up: push 64 MiB (4096 messages of 16 KiB) through 64 connections
     * so the server's code paths, allocator arenas and receive-buffer pools
     * are resident before the "before" RSS; only per-connection state is
     * counted after. */
    for (i = 0; i < WARM_CONNS; i++) {
        warm[i] = dial();
        if (warm[i] >= 0)
            setsockopt(warm[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        else
            errors++;
    }
    for (j = 0; j < WARM_ROUNDS; j++) {
        unsigned size = j % 2 ? WARM_SIZE : opt.size;
        for (i = 0; i < WARM_CONNS; i++)
            if (warm[i] >= 0 && send(warm[i], pattern, size, MSG_NOSIGNAL) != (ssize_t)size) {
                errors++;
                close(warm[i]);
                warm[i] = -1;
            }
        for (i = 0; i < WARM_CONNS; i++)
            if (warm[i] >= 0 && recv_exactly(warm[i], size) < 0) {
                errors++;
                close(warm[i]);
                warm[i] = -1;
            }
    }
    for (i = 0; i < WARM_CONNS; i++)
        if (warm[i] >= 0)
            close(warm[i]);
    usleep((useconds_t)(opt.warmup * 1e6));
    before = read_rss_kb();

    t0 = now_ns();
    for (i = 0; i < opt.conns; i += opt.batch) {
        unsigned end = i + opt.batch < opt.conns ? i + opt.batch : opt.conns;
        if (now_ns() - t0 > IDLE_DEADLINE_NS) {       /* a stuck server: give up */
            for (j = i; j < opt.conns; j++)
                fds[j] = -1;
            errors += opt.conns - i;
            break;
        }
        for (j = i; j < end; j++) {
            fds[j] = dial();
            if (fds[j] < 0)
                errors++;
            else
                setsockopt(fds[j], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        }
        for (j = i; j < end; j++)
            if (fds[j] >= 0 && send(fds[j], pattern, opt.size, MSG_NOSIGNAL) != (ssize_t)opt.size)
                errors++;
        for (j = i; j < end; j++) {
            if (fds[j] < 0)
                continue;
            if (recv_exactly(fds[j], opt.size) == 0)
                open_ok++;
            else
                errors++;
        }
    }
    t1 = now_ns();
    usleep((useconds_t)(opt.warmup * 1e6));
    after = read_rss_kb();
    printf("{\"mode\": \"idle\", \"conns\": %u, \"open\": %u, \"errors\": %llu,"
           " \"connect_s\": %.3f, \"rss_before_kb\": %ld, \"rss_after_kb\": %ld,"
           " \"rss_per_conn_bytes\": %.1f}\n",
           opt.conns, open_ok, (unsigned long long)errors, (double)(t1 - t0) / 1e9,
           before, after,
           before >= 0 && after >= 0 && open_ok ? (double)(after - before) * 1024.0 / open_ok
                                                : -1.0);
    fflush(stdout);
    for (i = 0; i < opt.conns; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return 0;
}

/* ---------------------------------------------------------------- main */

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --host H --port P [--conns N] [--depth D] [--size S]\n"
            "               [--duration T] [--warmup W] [--server-pid PID] [--verify]\n"
            "               [--idle [--batch B]]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'h'},  {"port", required_argument, 0, 'p'},
        {"conns", required_argument, 0, 'c'}, {"depth", required_argument, 0, 'd'},
        {"size", required_argument, 0, 's'},  {"duration", required_argument, 0, 't'},
        {"warmup", required_argument, 0, 'w'}, {"server-pid", required_argument, 0, 'P'},
        {"idle", no_argument, 0, 'i'},        {"verify", no_argument, 0, 'v'},
        {"batch", required_argument, 0, 'b'}, {"spin", no_argument, 0, 'S'}, {0, 0, 0, 0},
    };
    int ch;
    unsigned i;

    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'c': opt.conns = (unsigned)atoi(optarg); break;
        case 'd': opt.depth = (unsigned)atoi(optarg); break;
        case 's': opt.size = (unsigned)atoi(optarg); break;
        case 't': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'P': opt.server_pid = atoi(optarg); break;
        case 'i': opt.idle = 1; break;
        case 'v': opt.verify = 1; break;
        case 'b': opt.batch = (unsigned)atoi(optarg); break;
        case 'S': opt.spin = 1; break;
        default: usage();
        }
    }
    if (opt.port <= 0 || !opt.conns || !opt.depth || !opt.size || opt.duration <= 0 ||
        opt.warmup < 0 || !opt.batch || opt.conns > (1u << 24))
        usage();
    signal(SIGPIPE, SIG_IGN);
    raise_nofile(opt.conns + 16);

    pattern = malloc(MAX_SEND + PATTERN_MOD);
    hist = calloc(HIST_BUCKETS, sizeof(uint32_t));
    if (!pattern || !hist)
        die("malloc", ENOMEM);
    for (i = 0; i < MAX_SEND + PATTERN_MOD; i++)
        pattern[i] = (unsigned char)(i % PATTERN_MOD);
    return opt.idle ? run_idle() : run_loop();
}
