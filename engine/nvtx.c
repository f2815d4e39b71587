/*
 * engine/nvtx.c -- NVTX wrappers. With CUDA: nvtx3 (header-only, so no
 * library to link), one `brigade` domain created on first use. Without:
 * empty functions. Must not fail or allocate beyond NVTX's own handles.
 */
#include "engine/nvtx.h"

#ifdef BG_HAVE_CUDA
#include <nvtx3/nvToolsExt.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

static nvtxDomainHandle_t bg_nvtx_domain(void)
{
    static nvtxDomainHandle_t d;
    if (!d)
        d = nvtxDomainCreateA("brigade");
    return d;
}

/* One colour per action kind: F, B, W, BW, transfers, allreduce, optimizer. */
static const unsigned bg_nvtx_colors[] = {0xff4c9be8, 0xffe8704c, 0xffe8c54c, 0xffd0584c,
                                          0xff8fbf6a, 0xff6abf8f, 0xff9a6abf, 0xffbf6a9a,
                                          0xff777777, 0xff333333};

void bg_nvtx_push_action(const char *name, int kind, int mb)
{
    nvtxEventAttributes_t a = {0};
    a.version = NVTX_VERSION;
    a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    a.colorType = NVTX_COLOR_ARGB;
    a.color = bg_nvtx_colors[(unsigned)kind % (sizeof(bg_nvtx_colors) / sizeof(bg_nvtx_colors[0]))];
    a.payloadType = NVTX_PAYLOAD_TYPE_INT32;
    a.payload.iValue = mb;
    a.messageType = NVTX_MESSAGE_TYPE_ASCII;
    a.message.ascii = name;
    nvtxDomainRangePushEx(bg_nvtx_domain(), &a);
}

void bg_nvtx_push_layer(const char *name)
{
    nvtxEventAttributes_t a = {0};
    a.version = NVTX_VERSION;
    a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    a.messageType = NVTX_MESSAGE_TYPE_ASCII;
    a.message.ascii = name;
    nvtxDomainRangePushEx(bg_nvtx_domain(), &a);
}

void bg_nvtx_pop(void)
{
    nvtxDomainRangePop(bg_nvtx_domain());
}

void bg_nvtx_name_thread(const char *name)
{
    nvtxNameOsThreadA((uint32_t)syscall(SYS_gettid), name);
}
#else
void bg_nvtx_push_action(const char *name, int kind, int mb)
{
    (void)name, (void)kind, (void)mb;
}
void bg_nvtx_push_layer(const char *name)
{
    (void)name;
}
void bg_nvtx_pop(void) {}
void bg_nvtx_name_thread(const char *name)
{
    (void)name;
}
#endif
