/*
 * A /dev/sev client written against the system's <linux/psp-sev.h> only, as sev-tool and
 * QEMU are: it knows nothing of sevd.
 *
 *   sevclient info  NODE   print what the platform reports
 *   sevclient check NODE   run the driver-conformance checks; prints "N passed, M failed"
 *   sevclient pdh   NODE   print the PDH certificate in hex (the platform's keys, to compare)
 *   sevclient hold  NODE   keep one open file: a PLATFORM_STATUS per line on stdin, printing
 *                          "ok" or "errno N" (a client that stays while the daemon reloads)
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/psp-sev.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define CERT_LEN 0x824
#define POISON 0xdeadbeefu

static int passed, failed;

static void check(int ok, const char *what)
{
	printf("%s: %s\n", ok ? "ok" : "FAIL", what);
	if (ok)
		passed++;
	else
		failed++;
}

/* Issues a command; returns 0 or errno, leaves the error field in *error. */
static int issue(int fd, unsigned int cmd, void *data, uint32_t *error)
{
	struct sev_issue_cmd arg = { .cmd = cmd, .data = (uint64_t)(uintptr_t)data, .error = POISON };
	int r = ioctl(fd, SEV_ISSUE_CMD, &arg);
	if (error)
		*error = arg.error;
	return r < 0 ? errno : 0;
}

static int info(const char *node)
{
	int fd = open(node, O_RDWR);
	if (fd < 0) {
		perror(node);
		return 1;
	}
	struct sev_user_data_status st;
	uint32_t error;
	if (issue(fd, SEV_PLATFORM_STATUS, &st, &error)) {
		fprintf(stderr, "PLATFORM_STATUS failed, error 0x%x\n", error);
		return 1;
	}
	printf("api %u.%u build %u, state %u, flags 0x%x (%s-owned%s), guests %u\n", st.api_major,
	       st.api_minor, st.build, st.state, st.flags, (st.flags & 1) ? "externally" : "self",
	       (st.flags & SEV_STATUS_FLAGS_CONFIG_ES) ? ", SEV-ES" : "", st.guest_count);
	struct sev_user_data_get_id2 id2 = { 0 };
	issue(fd, SEV_GET_ID2, &id2, &error);
	unsigned char id[64];
	id2.address = (uintptr_t)id;
	if (id2.length == 64 && !issue(fd, SEV_GET_ID2, &id2, &error)) {
		printf("chip id ");
		for (int i = 0; i < 64; i++)
			printf("%02X", id[i]);
		printf("\n");
	}
	struct sev_user_data_pdh_cert_export pdh = { 0 };
	issue(fd, SEV_PDH_CERT_EXPORT, &pdh, &error);
	printf("PDH_CERT_EXPORT needs %u + %u bytes (error 0x%x, INVALID_LEN)\n", pdh.pdh_cert_len,
	       pdh.cert_chain_len, error);
	close(fd);
	return 0;
}

static int checks(const char *node)
{
	int fd = open(node, O_RDWR), ro = open(node, O_RDONLY);
	if (fd < 0 || ro < 0) {
		perror(node);
		return 1;
	}
	uint32_t error;
	int r;

	struct sev_user_data_status st;
	r = issue(fd, SEV_PLATFORM_STATUS, &st, &error);
	check(r == 0 && error == 0, "PLATFORM_STATUS succeeds and clears error");
	check(st.state == 1 && (st.flags & SEV_STATUS_FLAGS_CONFIG_ES), "platform is INIT with SEV-ES");
	r = issue(ro, SEV_PLATFORM_STATUS, &st, &error);
	check(r == 0, "PLATFORM_STATUS works on a read-only fd");

	/* sev-tool's two-step PEK_CSR: a buffer with length 0 first. */
	unsigned char *csr = calloc(1, CERT_LEN);
	struct sev_user_data_pek_csr pc = { .address = (uintptr_t)csr, .length = 0 };
	r = issue(fd, SEV_PEK_CSR, &pc, &error);
	check(r == EIO && error == SEV_RET_INVALID_LEN && pc.length == CERT_LEN,
	      "PEK_CSR length query: EIO, INVALID_LEN, length 2084");
	r = issue(fd, SEV_PEK_CSR, &pc, &error);
	check(r == 0 && error == 0 && csr[8] == 0x02 && csr[9] == 0x10, "PEK_CSR returns the PEK body");
	struct sev_user_data_pek_csr pc0 = { 0 };
	r = issue(fd, SEV_PEK_CSR, &pc0, &error);
	check(r == EIO && error == SEV_RET_INVALID_LEN && pc0.length == CERT_LEN, "PEK_CSR with address 0");

	/* QEMU's query-sev-capabilities: an all-zero struct, then the lengths it returned. */
	struct sev_user_data_pdh_cert_export pe = { 0 };
	r = issue(fd, SEV_PDH_CERT_EXPORT, &pe, &error);
	check(r == EIO && error == SEV_RET_INVALID_LEN && pe.pdh_cert_len == CERT_LEN &&
		      pe.cert_chain_len == 3 * CERT_LEN,
	      "PDH_CERT_EXPORT length query gives 2084 and 6252");
	unsigned char *pdh = calloc(1, pe.pdh_cert_len), *chain = calloc(1, pe.cert_chain_len);
	pe.pdh_cert_address = (uintptr_t)pdh;
	pe.cert_chain_address = (uintptr_t)chain;
	r = issue(ro, SEV_PDH_CERT_EXPORT, &pe, &error);
	check(r == 0 && pdh[8] == 0x03 && pdh[9] == 0x10 && chain[8] == 0x02 && chain[CERT_LEN + 8] == 0x01 &&
		      chain[2 * CERT_LEN + 8] == 0x04,
	      "PDH_CERT_EXPORT on a read-only fd: PDH, then PEK, OCA, CEK");

	struct sev_user_data_get_id2 id2 = { 0 };
	r = issue(ro, SEV_GET_ID2, &id2, &error);
	check(r == EIO && error == SEV_RET_INVALID_LEN && id2.length == 64, "GET_ID2 length query gives 64");
	unsigned char id[64];
	id2.address = (uintptr_t)id;
	r = issue(ro, SEV_GET_ID2, &id2, &error);
	check(r == 0 && id2.length == 64, "GET_ID2 returns 64 bytes");
	struct sev_user_data_get_id legacy;
	memset(&legacy, 0x5a, sizeof(legacy));
	r = issue(fd, SEV_GET_ID, &legacy, &error);
	check(r == 0 && !memcmp(legacy.socket1, id, 64) && legacy.socket2[0] == 0x5a,
	      "deprecated GET_ID fills socket1 only");

	/* Permissions and bad requests. */
	r = issue(ro, SEV_PEK_GEN, NULL, &error);
	check(r == EPERM && error == POISON, "PEK_GEN on a read-only fd: EPERM, error untouched");
	r = issue(ro, SEV_FACTORY_RESET, NULL, &error);
	check(r == EPERM, "FACTORY_RESET on a read-only fd: EPERM");
	r = issue(fd, SEV_MAX + 3, &st, &error);
	check(r == EINVAL && error == POISON, "unknown command id: EINVAL, nothing copied back");
	{
		struct sev_issue_cmd arg = { .cmd = SEV_PLATFORM_STATUS, .data = (uintptr_t)&st };
		r = ioctl(fd, _IOWR('S', 0x1, struct sev_issue_cmd), &arg) < 0 ? errno : 0;
		check(r == EINVAL, "another request number: EINVAL");
	}
	r = issue(fd, SEV_PLATFORM_STATUS, (void *)8, &error);
	check(r == EFAULT, "unmapped data pointer: EFAULT");
	r = ioctl(fd, SEV_ISSUE_CMD, (void *)8) < 0 ? errno : 0;
	check(r == EFAULT, "unmapped argument: EFAULT");

	unsigned char *zeros = calloc(1, CERT_LEN);
	struct sev_user_data_pek_cert_import imp = { (uintptr_t)zeros, CERT_LEN, (uintptr_t)zeros, CERT_LEN };
	r = issue(fd, SEV_PEK_CERT_IMPORT, &imp, &error);
	check(r == EIO && error == SEV_RET_INVALID_CERTIFICATE, "PEK_CERT_IMPORT of zeros: INVALID_CERTIFICATE");
	imp.pek_cert_len = 0;
	r = issue(fd, SEV_PEK_CERT_IMPORT, &imp, &error);
	check(r == EINVAL, "PEK_CERT_IMPORT with length 0: EINVAL");
	imp.pek_cert_len = 0x4001;
	r = issue(fd, SEV_PEK_CERT_IMPORT, &imp, &error);
	check(r == EINVAL, "PEK_CERT_IMPORT above 16 KiB: EINVAL");
	r = issue(fd, SEV_PDH_GEN, NULL, &error);
	check(r == 0 && error == 0, "PDH_GEN succeeds");

	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

static int pdh(const char *node)
{
	int fd = open(node, O_RDONLY);
	if (fd < 0) {
		perror(node);
		return 1;
	}
	unsigned char *cert = calloc(1, CERT_LEN), *chain = calloc(3, CERT_LEN);
	struct sev_user_data_pdh_cert_export pe = { (uintptr_t)cert, CERT_LEN, (uintptr_t)chain,
						    3 * CERT_LEN };
	uint32_t error;
	int r = issue(fd, SEV_PDH_CERT_EXPORT, &pe, &error);
	if (r) {
		fprintf(stderr, "PDH_CERT_EXPORT: errno %d, error 0x%x\n", r, error);
		return 1;
	}
	for (int i = 0; i < CERT_LEN; i++)
		printf("%02x", cert[i]);
	printf("\n");
	return 0;
}

static int hold(const char *node)
{
	int fd = open(node, O_RDWR);
	if (fd < 0) {
		perror(node);
		return 1;
	}
	char line[64];
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		struct sev_user_data_status st;
		int r = issue(fd, SEV_PLATFORM_STATUS, &st, NULL);
		if (r)
			printf("errno %d\n", r);
		else
			printf("ok\n");
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s info|check|pdh|hold NODE\n", argv[0]);
		return 2;
	}
	if (!strcmp(argv[1], "info"))
		return info(argv[2]);
	if (!strcmp(argv[1], "check"))
		return checks(argv[2]);
	if (!strcmp(argv[1], "pdh"))
		return pdh(argv[2]);
	if (!strcmp(argv[1], "hold"))
		return hold(argv[2]);
	fprintf(stderr, "unknown mode %s\n", argv[1]);
	return 2;
}
