#version 450
// ${NAME}: ${BATCH} x (${M} x ${K}) @ (${K} x ${N}); stores ${STORES}
// matmul_direct for operands of which one or both read four adjacent elements of a row as one vec4
// (a buffer read through views that keep them adjacent and aligned): each thread still computes a
// BLOCK_M x BLOCK_N register block, but four columns or four steps of K come in one vec4 (a texel
// fetch, which costs lavapipe what a float does). With STORE_QUADS, four adjacent outputs are stored at once.
layout(local_size_x = ${LOCAL_SIZE}) in;

const int M = ${M};
const int N = ${N};
const int K = ${K};
const int BLOCK_M = ${BLOCK_M};
const int BLOCK_N = ${BLOCK_N};
#define STORE_QUADS ${STORE_QUADS}
const int BLOCKS_M = (M + BLOCK_M - 1) / BLOCK_M;
const int BLOCKS_N = (N + BLOCK_N - 1) / BLOCK_N;
#define PART(v, c) v[c]

${BUFFERS}
${HELPERS}
${FUNCTIONS}
void main() {
    int block = int((gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * ${LOCAL_SIZE}u + gl_LocalInvocationID.x);
    if (block >= ${BATCH} * BLOCKS_M * BLOCKS_N) {
        return;
    }
    int batch = block / (BLOCKS_M * BLOCKS_N);
    int row0 = block / BLOCKS_N % BLOCKS_M * BLOCK_M;
    int col0 = block % BLOCKS_N * BLOCK_N;
    vec4 acc[BLOCK_M][BLOCK_N / 4];
    for (int r = 0; r < BLOCK_M; r++) {
        for (int c = 0; c < BLOCK_N / 4; c++) {
            acc[r][c] = vec4(0.0);
        }
    }
    for (int k0 = 0; k0 < K; k0 += 4) {
        vec4 a[BLOCK_M];
        for (int r = 0; r < BLOCK_M; r++) {
            a[r] = fetch_a(batch, row0 + r, k0);
        }
        vec4 b[4][BLOCK_N / 4];
        for (int j = 0; j < 4; j++) {
            for (int c = 0; c < BLOCK_N / 4; c++) {
                b[j][c] = fetch_b(batch, k0 + j, col0 + c * 4);
            }
        }
        for (int r = 0; r < BLOCK_M; r++) {
            for (int c = 0; c < BLOCK_N / 4; c++) {
                vec4 sum = acc[r][c];
                for (int j = 0; j < 4; j++) {
                    sum += a[r][j] * b[j][c];
                }
                acc[r][c] = sum;
            }
        }
    }
    ${PROLOGUE}
#if STORE_QUADS
    for (int r = 0; r < BLOCK_M; r++) {
        for (int c = 0; c < BLOCK_N; c += 4) {
            int row = row0 + r;
            int col = col0 + c;
            if (row < M && col < N) {
                store_quad((batch * M + row) * N + col, acc[r][c / 4]);
            }
        }
    }
#else
    for (int r = 0; r < BLOCK_M; r++) {
        for (int c = 0; c < BLOCK_N; c++) {
            int row = row0 + r;
            int col = col0 + c;
            if (row < M && col < N) {
                store_output((batch * M + row) * N + col, acc[r][c / 4][c % 4]);
            }
        }
    }
#endif
}
