/* The scenario a driver stand-in plays, read from the file named by
 * TORCH_DOCTOR_STUB_CONFIG. One "key=value" per line:
 *
 *   driver_version=580.95.05        nvmlSystemGetDriverVersion
 *   cuda_version=13000              nvmlSystemGetCudaDriverVersion_v2, cuDriverGetVersion
 *   nvml_init_error=18              returned by nvmlInit*, e.g. 18 = LIB_RM_VERSION_MISMATCH
 *   cu_init_error=803               returned by cuInit
 *   nvml_init_sleep=30              nvmlInit* sleeps this many seconds first (a hung driver)
 *   cu_init_crash=1                 cuInit aborts the process (a crashing driver)
 *   gpu=NAME|MAJOR.MINOR|MEMORY_MIB|MIG|UUID|BUS_ID|FABRIC    one line per GPU; MIG is 1, 0
 *                                   or - (- = the GPU does not support MIG); FABRIC is the
 *                                   NVSwitch fabric state STATE[:STATUS] (1 not started,
 *                                   2 in progress, 3 completed; STATUS an nvmlReturn_t) or
 *                                   - / empty (not supported)
 *   fabric_v=0                      nvmlDeviceGetGpuFabricInfoV answers 13 (Function Not
 *                                   Found), as on drivers that only have the older call
 *   nvml_raw_byte=255               appended to GPU names and the driver version (not UTF-8)
 *   nvml_init_fork=40               nvmlInit* forks a daemon (setsid) that keeps the
 *                                   caller's stdout open and sleeps this many seconds
 *   nvml_fork_pidfile=PATH          where that daemon writes its pid
 *   nvml_init_print=100000          nvmlInit* writes this many "[" and a newline to the
 *                                   caller's stdout (a driver that prints garbage)
 *   p2p=A-B:STATUS                  nvmlDeviceGetP2PStatus between GPUs A and B (both ways):
 *                                   an nvmlGpuP2PStatus_t, e.g. 1 = chipset not supported;
 *                                   pairs not named answer 0 (OK)
 *   topology=A-B:LEVEL              nvmlDeviceGetTopologyCommonAncestor between A and B: an
 *                                   nvmlGpuTopologyLevel_t (0 internal, 10 single PCIe switch,
 *                                   20 multiple switches, 30 host bridge, 40 NUMA node,
 *                                   50 system); pairs not named answer 10
 */
#ifndef TORCH_DOCTOR_STUB_CONFIG_H
#define TORCH_DOCTOR_STUB_CONFIG_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STUB_MAX_GPUS 8

struct stub_gpu {
    char name[96];
    int cc_major, cc_minor;
    unsigned long long memory_bytes;
    int mig; /* 1 enabled, 0 disabled, -1 not supported */
    char uuid[96];
    char bus_id[32];
    int fabric_state; /* 0 not supported, 1 not started, 2 in progress, 3 completed */
    int fabric_status;
};

struct stub_config {
    int loaded;
    char driver_version[80];
    int cuda_version;
    int nvml_init_error;
    int cu_init_error;
    int nvml_init_sleep;
    int cu_init_crash;
    int fabric_v_missing;
    int nvml_raw_byte;
    int nvml_init_fork;
    char nvml_fork_pidfile[400];
    int nvml_init_print;
    int gpu_count;
    struct stub_gpu gpus[STUB_MAX_GPUS];
    int p2p[STUB_MAX_GPUS][STUB_MAX_GPUS];
    int topology[STUB_MAX_GPUS][STUB_MAX_GPUS]; /* 0: not named (answers 10) */
};

static struct stub_config stub;

static void stub_copy(char *dst, size_t size, const char *src) {
    strncpy(dst, src ? src : "", size - 1);
    dst[size - 1] = '\0';
}

static void stub_parse_gpu(const char *value) {
    if (stub.gpu_count >= STUB_MAX_GPUS) return;
    struct stub_gpu *gpu = &stub.gpus[stub.gpu_count];
    char buffer[512];
    stub_copy(buffer, sizeof buffer, value);
    char *fields[7] = {0};
    int n = 0;
    char *cursor = buffer;
    while (n < 7) {
        fields[n++] = cursor;
        char *bar = strchr(cursor, '|');
        if (!bar) break;
        *bar = '\0';
        cursor = bar + 1;
    }
    stub_copy(gpu->name, sizeof gpu->name, fields[0]);
    gpu->cc_major = 0;
    gpu->cc_minor = 0;
    if (fields[1]) sscanf(fields[1], "%d.%d", &gpu->cc_major, &gpu->cc_minor);
    gpu->memory_bytes = fields[2] ? strtoull(fields[2], NULL, 10) * 1024ULL * 1024ULL : 0;
    gpu->mig = (fields[3] && fields[3][0] == '1') ? 1 : (fields[3] && fields[3][0] == '0') ? 0 : -1;
    if (fields[4] && fields[4][0]) {
        stub_copy(gpu->uuid, sizeof gpu->uuid, fields[4]);
    } else {
        snprintf(gpu->uuid, sizeof gpu->uuid, "GPU-00000000-0000-0000-0000-%012d", stub.gpu_count);
    }
    if (fields[5] && fields[5][0]) {
        stub_copy(gpu->bus_id, sizeof gpu->bus_id, fields[5]);
    } else {
        snprintf(gpu->bus_id, sizeof gpu->bus_id, "00000000:%02X:00.0", stub.gpu_count + 1);
    }
    gpu->fabric_state = 0;
    gpu->fabric_status = 0;
    if (fields[6] && fields[6][0] && fields[6][0] != '-') {
        sscanf(fields[6], "%d:%d", &gpu->fabric_state, &gpu->fabric_status);
    }
    stub.gpu_count++;
}

static void stub_load(void) {
    if (stub.loaded) return;
    stub.loaded = 1;
    stub_copy(stub.driver_version, sizeof stub.driver_version, "580.95.05");
    stub.cuda_version = 13000;
    const char *path = getenv("TORCH_DOCTOR_STUB_CONFIG");
    FILE *file = path ? fopen(path, "r") : NULL;
    if (!file) return;
    char line[600];
    while (fgets(line, sizeof line, file)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *eq = strchr(line, '=');
        if (!eq || line[0] == '#') continue;
        *eq = '\0';
        const char *key = line, *value = eq + 1;
        if (!strcmp(key, "driver_version")) stub_copy(stub.driver_version, sizeof stub.driver_version, value);
        else if (!strcmp(key, "cuda_version")) stub.cuda_version = atoi(value);
        else if (!strcmp(key, "nvml_init_error")) stub.nvml_init_error = atoi(value);
        else if (!strcmp(key, "cu_init_error")) stub.cu_init_error = atoi(value);
        else if (!strcmp(key, "nvml_init_sleep")) stub.nvml_init_sleep = atoi(value);
        else if (!strcmp(key, "cu_init_crash")) stub.cu_init_crash = atoi(value);
        else if (!strcmp(key, "nvml_raw_byte")) stub.nvml_raw_byte = atoi(value);
        else if (!strcmp(key, "nvml_init_fork")) stub.nvml_init_fork = atoi(value);
        else if (!strcmp(key, "nvml_init_print")) stub.nvml_init_print = atoi(value);
        else if (!strcmp(key, "nvml_fork_pidfile"))
            stub_copy(stub.nvml_fork_pidfile, sizeof stub.nvml_fork_pidfile, value);
        else if (!strcmp(key, "gpu")) stub_parse_gpu(value);
        else if (!strcmp(key, "fabric_v")) stub.fabric_v_missing = !atoi(value);
        else if (!strcmp(key, "topology")) {
            int a = -1, b = -1, level = 0;
            if (sscanf(value, "%d-%d:%d", &a, &b, &level) == 3 && a >= 0 && b >= 0 &&
                a < STUB_MAX_GPUS && b < STUB_MAX_GPUS) {
                /* stored +1 so that 0 (internal) differs from "not named" */
                stub.topology[a][b] = stub.topology[b][a] = level + 1;
            }
        }
        else if (!strcmp(key, "p2p")) {
            int a = -1, b = -1, status = 0;
            if (sscanf(value, "%d-%d:%d", &a, &b, &status) == 3 && a >= 0 && b >= 0 &&
                a < STUB_MAX_GPUS && b < STUB_MAX_GPUS) {
                stub.p2p[a][b] = stub.p2p[b][a] = status;
            }
        }
    }
    fclose(file);
    if (stub.nvml_raw_byte > 0 && stub.nvml_raw_byte < 256) {
        char suffix[2] = {(char)stub.nvml_raw_byte, '\0'};
        for (int i = 0; i < stub.gpu_count; i++)
            strncat(stub.gpus[i].name, suffix, sizeof stub.gpus[i].name - strlen(stub.gpus[i].name) - 1);
        strncat(stub.driver_version, suffix, sizeof stub.driver_version - strlen(stub.driver_version) - 1);
    }
}

#endif
