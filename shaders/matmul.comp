#version 450
// ${NAME}: ${BATCH} x (${M} x ${K}) @ (${K} x ${N}); stores ${STORES}
// Each 16 x 16 workgroup computes a TILE_M x TILE_N block of the output, staging TILE_K-wide
// slices of A and B in shared memory; each thread accumulates a BLOCK_M x BLOCK_N register block.
layout(local_size_x = 16, local_size_y = 16) in;

const int M = ${M};
const int N = ${N};
const int K = ${K};
const int TILE_M = ${TILE_M};
const int TILE_N = ${TILE_N};
const int TILE_K = ${TILE_K};
const int BLOCK_M = TILE_M / 16;
const int BLOCK_N = TILE_N / 16;

${BUFFERS}
${HELPERS}
${FUNCTIONS}
shared float tile_a[TILE_K][TILE_M + 1];  // + 1: the column-wise stores below hit distinct banks
shared float tile_b[TILE_K][TILE_N];

void main() {
    int batch = int(gl_WorkGroupID.z);
    int row0 = int(gl_WorkGroupID.y) * TILE_M;
    int col0 = int(gl_WorkGroupID.x) * TILE_N;
    int tx = int(gl_LocalInvocationID.x);
    int ty = int(gl_LocalInvocationID.y);
    int lane = ty * 16 + tx;
    float acc[BLOCK_M][BLOCK_N];
    for (int r = 0; r < BLOCK_M; r++) {
        for (int c = 0; c < BLOCK_N; c++) {
            acc[r][c] = 0.0;
        }
    }
    for (int k0 = 0; k0 < K; k0 += TILE_K) {
        for (int e = lane; e < TILE_M * TILE_K; e += 256) {
            int m = e / TILE_K;
            int k = e % TILE_K;
            int row = row0 + m;
            int depth = k0 + k;
            tile_a[k][m] = row < M && depth < K ? load_a((batch * M + row) * K + depth) : 0.0;
        }
        for (int e = lane; e < TILE_K * TILE_N; e += 256) {
            int k = e / TILE_N;
            int n = e % TILE_N;
            int col = col0 + n;
            int depth = k0 + k;
            tile_b[k][n] = col < N && depth < K ? load_b((batch * K + depth) * N + col) : 0.0;
        }
        barrier();
        for (int k = 0; k < TILE_K; k++) {
            float a[BLOCK_M];
            float b[BLOCK_N];
            for (int r = 0; r < BLOCK_M; r++) {
                a[r] = tile_a[k][ty + 16 * r];
            }
            for (int c = 0; c < BLOCK_N; c++) {
                b[c] = tile_b[k][tx + 16 * c];
            }
            for (int r = 0; r < BLOCK_M; r++) {
                for (int c = 0; c < BLOCK_N; c++) {
                    acc[r][c] += a[r] * b[c];
                }
            }
        }
        barrier();
    }
    for (int r = 0; r < BLOCK_M; r++) {
        for (int c = 0; c < BLOCK_N; c++) {
            int row = row0 + ty + 16 * r;
            int col = col0 + tx + 16 * c;
            if (row < M && col < N) {
                store_output((batch * M + row) * N + col, acc[r][c]);
            }
        }
    }
}
