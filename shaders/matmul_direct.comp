#version 450
// ${NAME}: ${BATCH} x (${M} x ${K}) @ (${K} x ${N}); stores ${STORES}
// No shared memory or barriers (the fast shape on CPU drivers such as lavapipe): each thread
// computes a BLOCK_M x BLOCK_N register block straight from the operands.
layout(local_size_x = 8, local_size_y = 8) in;

const int M = ${M};
const int N = ${N};
const int K = ${K};
const int BLOCK_M = ${BLOCK_M};
const int BLOCK_N = ${BLOCK_N};

${BUFFERS}
${HELPERS}
${FUNCTIONS}
void main() {
    int batch = int(gl_WorkGroupID.z);
    int row0 = int(gl_GlobalInvocationID.y) * BLOCK_M;
    int col0 = int(gl_GlobalInvocationID.x) * BLOCK_N;
    if (row0 >= M || col0 >= N) {
        return;
    }
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
            a[r] = row0 + r < M ? load_a((batch * M + row0 + r) * K + k) : 0.0;
        }
        for (int c = 0; c < BLOCK_N; c++) {
            b[c] = col0 + c < N ? load_b((batch * K + k) * N + col0 + c) : 0.0;
        }
        for (int r = 0; r < BLOCK_M; r++) {
            for (int c = 0; c < BLOCK_N; c++) {
                acc[r][c] += a[r] * b[c];
            }
        }
    }
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
