/*
 * c_uring_echo.c -- a plain C liburing echo server: the reference for what
 * the kernel allows, with the same machinery zerg uses (multishot accept,
 * multishot recv into a provided buffer ring, send straight from the
 * received buffer, one io_uring_enter per loop iteration).
 *
 *     c_uring_echo --host 127.0.0.1 --port 0     # prints "ready <port>"
 *
 * Per connection at most one send is in flight, so echoed bytes keep their
 * order; received buffers wait in a per-connection FIFO (linked through a
 * per-buffer "next" array) and go back to the ring once sent.  A connection
 * closes when its recv ended (EOF or error) and no send is in flight, so a
 * recycled fd never gets a completion meant for the old connection.
 *
 * Debian's liburing 2.3 lacks io_uring_setup_buf_ring: the ring memory is
 * mmap'd here and registered with io_uring_register_buf_ring.
 *
 * Build: gcc -O2 -o c_uring_echo c_uring_echo.c /usr/lib/x86_64-linux-gnu/liburing.a
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
#include <unistd.h>

#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif

#define OP_ACCEPT 1ULL
#define OP_RECV 2ULL
#define OP_SEND 3ULL
#define NBUFS 4096u                 /* provided buffers (power of two) */
#define BUF_SIZE 16384u             /* like zerg's default recv_buffer_size */
#define BGID 1
#define NONE 0xffffffffu

struct conn {
    unsigned head, tail;            /* FIFO of buffer ids waiting to be sent */
    unsigned off;                   /* bytes of the head buffer already sent */
    unsigned char open, recv_armed, sending, recv_done, starved;
};

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static unsigned char *bufs;
static unsigned br_mask, br_pending;
static unsigned buf_len[NBUFS], buf_next[NBUFS];
static struct conn *conns;
static unsigned max_fd;
static unsigned nstarved;
static int listen_fd;

static void die(const char *what, int err)
{
    fprintf(stderr, "c_uring_echo: %s: %s\n", what, strerror(err));
    exit(1);
}

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

static void arm_accept(void)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, OP_ACCEPT);
}

static void arm_recv(unsigned fd)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_recv_multishot(sqe, (int)fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, ((uint64_t)fd << 8) | OP_RECV);
    conns[fd].recv_armed = 1;
    if (conns[fd].starved) {
        conns[fd].starved = 0;
        nstarved--;
    }
}

static void give_back(unsigned bid)
{
    io_uring_buf_ring_add(br, bufs + (size_t)bid * BUF_SIZE, BUF_SIZE,
                          (unsigned short)bid, br_mask, (int)br_pending);
    br_pending++;
}

static void kick_send(unsigned fd)
{
    struct conn *c = &conns[fd];
    struct io_uring_sqe *sqe;
    unsigned bid = c->head;

    if (c->sending || bid == NONE)
        return;
    sqe = sqe_get();
    io_uring_prep_send(sqe, (int)fd, bufs + (size_t)bid * BUF_SIZE + c->off,
                       buf_len[bid] - c->off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ((uint64_t)fd << 8) | OP_SEND);
    c->sending = 1;
}

static void drop_queue(struct conn *c)
{
    while (c->head != NONE) {
        unsigned bid = c->head;
        c->head = buf_next[bid];
        give_back(bid);
    }
    c->tail = NONE;
}

static void maybe_close(unsigned fd)
{
    struct conn *c = &conns[fd];

    if (c->open && c->recv_done && !c->recv_armed && !c->sending) {
        drop_queue(c);
        if (c->starved) {
            c->starved = 0;
            nstarved--;
        }
        c->open = 0;
        close((int)fd);
    }
}

static void on_accept(int res, unsigned flags)
{
    if (res >= 0) {
        unsigned fd = (unsigned)res;
        int one = 1;
        if (fd >= max_fd) {
            close(res);
        } else {
            setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            memset(&conns[fd], 0, sizeof(conns[fd]));
            conns[fd].head = conns[fd].tail = NONE;
            conns[fd].open = 1;
            arm_recv(fd);
        }
    }
    if (!(flags & IORING_CQE_F_MORE))
        arm_accept();
}

static void on_recv(unsigned fd, int res, unsigned flags)
{
    struct conn *c = &conns[fd];

    if (res > 0 && (flags & IORING_CQE_F_BUFFER)) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        if (c->recv_done) {
            give_back(bid);
        } else {
            buf_len[bid] = (unsigned)res;
            buf_next[bid] = NONE;
            if (c->tail == NONE)
                c->head = bid;
            else
                buf_next[c->tail] = bid;
            c->tail = bid;
            kick_send(fd);
        }
    }
    if (!(flags & IORING_CQE_F_MORE)) {
        c->recv_armed = 0;
        if (res == -ENOBUFS && !c->recv_done) {
            c->starved = 1;
            nstarved++;
        } else if (res > 0 && !c->recv_done) {
            arm_recv(fd);
        } else {
            c->recv_done = 1;
            maybe_close(fd);
        }
    }
}

static void on_send(unsigned fd, int res)
{
    struct conn *c = &conns[fd];
    unsigned bid = c->head;

    c->sending = 0;
    if (res < 0 && res != -EAGAIN && res != -EINTR) {
        drop_queue(c);
        c->recv_done = 1;
        shutdown((int)fd, SHUT_RDWR);       /* ends a multishot recv still armed */
        maybe_close(fd);
        return;
    }
    if (res > 0) {
        c->off += (unsigned)res;
        if (c->off >= buf_len[bid]) {
            c->off = 0;
            c->head = buf_next[bid];
            if (c->head == NONE)
                c->tail = NONE;
            give_back(bid);
        }
    }
    kick_send(fd);
    maybe_close(fd);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'h'}, {"port", required_argument, 0, 'p'}, {0, 0, 0, 0},
    };
    const char *host = "127.0.0.1";
    int port = 7000, ch, one = 1, ret;
    struct sockaddr_in sa;
    socklen_t salen = sizeof(sa);
    struct io_uring_params p;
    struct io_uring_buf_reg reg;
    struct rlimit rl;
    unsigned i;

    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (ch == 'h')
            host = optarg;
        else if (ch == 'p')
            port = atoi(optarg);
        else {
            fprintf(stderr, "usage: c_uring_echo --host H --port P\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    max_fd = rl.rlim_cur > 1048576 ? 1048576 : (unsigned)rl.rlim_cur;
    conns = calloc(max_fd, sizeof(*conns));
    if (!conns)
        die("calloc", ENOMEM);

    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0)
        die("socket", errno);
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(listen_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        die("inet_pton", EINVAL);
    if (bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("bind", errno);
    if (listen(listen_fd, 4096) < 0)
        die("listen", errno);
    getsockname(listen_fd, (struct sockaddr *)&sa, &salen);

    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = 65536;
    ret = io_uring_queue_init_params(4096, &ring, &p);
    if (ret < 0) {
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = 65536;
        ret = io_uring_queue_init_params(4096, &ring, &p);
    }
    if (ret < 0)
        die("io_uring_queue_init_params", -ret);

    bufs = mmap(NULL, (size_t)NBUFS * BUF_SIZE, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    br = mmap(NULL, NBUFS * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
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

    arm_accept();
    io_uring_submit(&ring);
    printf("ready %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;

        ret = io_uring_submit_and_wait(&ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EBUSY)
            die("io_uring_submit_and_wait", -ret);
        io_uring_for_each_cqe(&ring, head, cqe) {
            uint64_t ud = cqe->user_data;
            unsigned fd = (unsigned)(ud >> 8);
            seen++;
            switch (ud & 0xff) {
            case OP_ACCEPT: on_accept(cqe->res, cqe->flags); break;
            case OP_RECV: on_recv(fd, cqe->res, cqe->flags); break;
            case OP_SEND: on_send(fd, cqe->res); break;
            }
        }
        io_uring_cq_advance(&ring, seen);
        if (br_pending) {
            io_uring_buf_ring_advance(br, (int)br_pending);
            br_pending = 0;
        }
        if (nstarved)
            for (i = 0; i < max_fd && nstarved; i++)
                if (conns[i].starved && conns[i].open)
                    arm_recv(i);
    }
}
