#version 450
// ${NAME}: ${BATCH} x (${M} x ${K}) @ (${K} x ${N}); stores ${STORES}
// No shared memory or barriers (the fast shape on CPU drivers such as lavapipe): each thread
// computes a BLOCK_M x BLOCK_N register block straight from the operands. Blocks are numbered
// across the batch, so small products in a large batch still fill every lane. Rows and columns
// past the edges are read clamped and never stored (a branch per load costs more). K goes in
// steps of DEPTH, each accumulator summed over a step in a register: a block outgrows the
// registers, and reloading its accumulators once a step rather than once an FMA was 1.06-1.11x
// on lavapipe's ConvNet step. Only the last step checks for the end of K. With STORE_QUADS (N a
// multiple of 4) a lane stores four adjacent outputs at once: lavapipe stores lane by lane, and
// four floats cost it little more than one (conv2d 1->16 at batch 100: 3.07 -> 2.42 ms).
layout(local_size_x = ${LOCAL_SIZE}) in;

const int M = ${M};
const int N = ${N};
const int K = ${K};
const int BLOCK_M = ${BLOCK_M};
const int BLOCK_N = ${BLOCK_N};
const int DEPTH = 2;
#define STORE_QUADS ${STORE_QUADS}
const int BLOCKS_M = (M + BLOCK_M - 1) / BLOCK_M;
const int BLOCKS_N = (N + BLOCK_N - 1) / BLOCK_N;

${BUFFERS}
${HELPERS}
${FUNCTIONS}
void step(inout float acc[BLOCK_M][BLOCK_N], int batch, int row0, int col0, int k0, bool tail) {
    float a[BLOCK_M][DEPTH];
    float b[DEPTH][BLOCK_N];
    for (int j = 0; j < DEPTH; j++) {
        int k = tail ? min(k0 + j, K - 1) : k0 + j;
        bool inside = !tail || k0 + j < K;
        for (int r = 0; r < BLOCK_M; r++) {
            a[r][j] = inside ? load_a(batch, min(row0 + r, M - 1), k) : 0.0;
        }
        for (int c = 0; c < BLOCK_N; c++) {
            b[j][c] = inside ? load_b(batch, k, min(col0 + c, N - 1)) : 0.0;
        }
    }
    for (int r = 0; r < BLOCK_M; r++) {
        for (int c = 0; c < BLOCK_N; c++) {
            float sum = acc[r][c];
            for (int j = 0; j < DEPTH; j++) {
                sum += a[r][j] * b[j][c];
            }
            acc[r][c] = sum;
        }
    }
}

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
    for (int k0 = 0; k0 < K - K % DEPTH; k0 += DEPTH) {
        step(acc, batch, row0, col0, k0, false);
    }
    if (K % DEPTH != 0) {
        step(acc, batch, row0, col0, K - K % DEPTH, true);
    }
    ${PROLOGUE}
#if STORE_QUADS
    for (int r = 0; r < BLOCK_M; r++) {
        for (int c = 0; c < BLOCK_N; c += 4) {
            int row = row0 + r;
            int col = col0 + c;
            if (row < M && col < N) {
                store_quad((batch * M + row) * N + col, vec4(acc[r][c], acc[r][c + 1], acc[r][c + 2], acc[r][c + 3]));
            }
        }
    }
#else
    for (int r = 0; r < BLOCK_M; r++) {
        for (int c = 0; c < BLOCK_N; c++) {
            int row = row0 + r;
            int col = col0 + c;
            if (row < M && col < N) {
                store_output((batch * M + row) * N + col, acc[r][c]);
            }
        }
    }
#endif
}
