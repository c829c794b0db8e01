#version 450
// ${NAME}: ${BATCH} x (${M} x ${K}) @ (${K} x ${N}); stores ${STORES}
// No shared memory or barriers (the fast shape on CPU drivers such as lavapipe): each thread
// computes a BLOCK_M x BLOCK_N register block straight from the operands. Blocks are numbered
// across the batch, so small products in a large batch still fill every lane.
layout(local_size_x = ${LOCAL_SIZE}) in;

const int M = ${M};
const int N = ${N};
const int K = ${K};
const int BLOCK_M = ${BLOCK_M};
const int BLOCK_N = ${BLOCK_N};
const int BLOCKS_M = (M + BLOCK_M - 1) / BLOCK_M;
const int BLOCKS_N = (N + BLOCK_N - 1) / BLOCK_N;

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
    float acc[BLOCK_M][BLOCK_N];
    for (int r = 0; r < BLOCK_M; r++) {
        for (int c = 0; c < BLOCK_N; c++) {
            acc[r][c] = 0.0;
        }
    }
    for (int k = 0; k < K; k++) {
        float a[BLOCK_M];
        float b[BLOCK_N];
        for (int r = 0; r < BLOCK_M; r++) {
            a[r] = row0 + r < M ? load_a(batch, row0 + r, k) : 0.0;
        }
        for (int c = 0; c < BLOCK_N; c++) {
            b[c] = col0 + c < N ? load_b(batch, k, col0 + c) : 0.0;
        }
        for (int r = 0; r < BLOCK_M; r++) {
            for (int c = 0; c < BLOCK_N; c++) {
                acc[r][c] += a[r] * b[c];
            }
        }
    }
    ${PROLOGUE}
    for (int r = 0; r < BLOCK_M; r++) {
        for (int c = 0; c < BLOCK_N; c++) {
            int row = row0 + r;
            int col = col0 + c;
            if (row < M && col < N) {
                store_output((batch * M + row) * N + col, acc[r][c]);
            }
        }
    }
}
