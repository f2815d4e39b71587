/*
 * transport/store_wire.c -- sending, reading and decoding store messages
 * (store_wire.h), and the socket options both ends use.
 *
 * Must NOT: interpret messages (server and client do), or allocate.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "transport/store_wire.h"

int bg_tp_wire_send(int fd, uint32_t type, uint32_t seq, uint32_t arg, const char *key,
                    const void *val, size_t vlen)
{
    size_t klen = key ? strlen(key) : 0;
    wire_hdr_t h = {htonl(type), htonl(seq), htonl(arg), htonl((uint32_t)klen),
                    htonl((uint32_t)vlen)};
    struct iovec iov[3] = {{&h, sizeof(h)}, {(void *)key, klen}, {(void *)val, vlen}};
    struct msghdr m = {0};
    m.msg_iov = iov;
    m.msg_iovlen = 3;
    /* One sendmsg per message where the socket allows; callers hold their
     * connection's lock, so partial writes never interleave. */
    while (m.msg_iovlen) {
        ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pf = {fd, POLLOUT, 0};
                poll(&pf, 1, 1000);
                continue;
            }
            return -1;
        }
        size_t left = (size_t)n;
        while (m.msg_iovlen && left >= m.msg_iov[0].iov_len) {
            left -= m.msg_iov[0].iov_len;
            m.msg_iov++;
            m.msg_iovlen--;
        }
        if (m.msg_iovlen) {
            m.msg_iov[0].iov_base = (char *)m.msg_iov[0].iov_base + left;
            m.msg_iov[0].iov_len -= left;
        }
    }
    return 0;
}

int bg_tp_wire_read(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t n = recv(fd, p, len, 0);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void bg_tp_wire_decode(wire_hdr_t *h)
{
    h->type = ntohl(h->type);
    h->seq = ntohl(h->seq);
    h->arg = ntohl(h->arg);
    h->klen = ntohl(h->klen);
    h->vlen = ntohl(h->vlen);
}

int bg_tp_wire_next(const char *buf, size_t len, uint32_t kmax, uint32_t vmax, wire_msg_t *m,
                    size_t *used)
{
    if (len < sizeof(wire_hdr_t))
        return 0;
    memcpy(&m->h, buf, sizeof(m->h));
    bg_tp_wire_decode(&m->h);
    if (m->h.klen > kmax || m->h.vlen > vmax)
        return -1;
    /* Both lengths are at most 2^32-1: their sum fits size_t on 64 bits. */
    size_t need = sizeof(wire_hdr_t) + (size_t)m->h.klen + m->h.vlen;
    if (len < need)
        return 0;
    m->key = buf + sizeof(wire_hdr_t);
    m->val = m->key + m->h.klen;
    *used = need;
    return 1;
}

int bg_tp_wire_hello_parse(const char *val, size_t vlen, uint32_t *world,
                           const unsigned char **mac, char *host)
{
    /* u32 world | 32-byte MAC | host name (no NUL, < MAX_HOST bytes). */
    if (vlen < 4 + 32 || vlen - 4 - 32 >= MAX_HOST)
        return -1;
    uint32_t w;
    memcpy(&w, val, 4);
    size_t hl = vlen - 36;
    if (memchr(val + 36, '\0', hl))
        return -1;
    *world = ntohl(w);
    *mac = (const unsigned char *)val + 4;
    memcpy(host, val + 36, hl);
    host[hl] = '\0';
    return 0;
}

void bg_tp_wire_keepalive(int fd)
{
    /* Why: a host that vanishes (power, network) sends no FIN; keepalive
     * probes turn that into an error within idle + intvl * cnt seconds. */
    int one = 1, idle = 2, intvl = 1, cnt = 3;
    unsigned user_to = 5000;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_to, sizeof(user_to));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

bg_status_t bg_tp_wire_status(uint32_t code)
{
    switch (code) {
    case STORE_E_NOMEM:
        return BG_ERR_NOMEM;
    case STORE_E_INVALID:
    case STORE_E_AUTH:
        return BG_ERR_INVALID;
    case STORE_E_BUSY:
        return BG_ERR_IO;
    default:
        return BG_ERR_INTERNAL;
    }
}
