#version 450
// ${NAME}: ${BATCH} x (${M} x ${K}) @ (${K} x ${N}); stores ${STORES}
// Each 16 x 16 workgroup computes a TILE_M x TILE_N block of the output, staging TILE_K-deep
// slices of A and B in shared memory. A thread's register block is made of WIDTH-wide groups
// spaced 16 groups apart, so each of its shared reads is a whole vector and the 16 threads of a
// row read neighbouring vectors. The next slices are loaded into registers, a vector at a time,
// during the products.
layout(local_size_x = 16, local_size_y = 16) in;

const int M = ${M};
const int N = ${N};
const int K = ${K};
const int TILE_M = ${TILE_M};
const int TILE_N = ${TILE_N};
const int TILE_K = ${TILE_K};
const int WIDTH = ${WIDTH};
const int GROUPS_M = TILE_M / (16 * WIDTH);
const int GROUPS_N = TILE_N / (16 * WIDTH);
const int LOADS_A = TILE_M * TILE_K / (256 * WIDTH);  // vectors of each slice a thread stages
const int LOADS_B = TILE_K * TILE_N / (256 * WIDTH);
#define VEC ${VEC}
#define PART(v, c) ${PART}

${BUFFERS}
${HELPERS}
${FUNCTIONS}
shared VEC tile_a[TILE_K][TILE_M / WIDTH + 1];  // padded: the column-wise stores hit distinct banks
shared VEC tile_b[TILE_K][TILE_N / WIDTH];
VEC staged_a[LOADS_A];
VEC staged_b[LOADS_B];

void fetch(int lane, int batch, int row0, int col0, int k0) {
    for (int i = 0; i < LOADS_A; i++) {
        int e = lane + 256 * i;
        staged_a[i] = fetch_a(batch, row0 + e / (TILE_K / WIDTH), k0 + e % (TILE_K / WIDTH) * WIDTH);
    }
    for (int i = 0; i < LOADS_B; i++) {
        int e = lane + 256 * i;
        staged_b[i] = fetch_b(batch, k0 + e / (TILE_N / WIDTH), col0 + e % (TILE_N / WIDTH) * WIDTH);
    }
}

void stage(int lane) {
    for (int i = 0; i < LOADS_A; i++) {
        int e = lane + 256 * i;
        int m = e / (TILE_K / WIDTH);
        int k = e % (TILE_K / WIDTH) * WIDTH;
        for (int j = 0; j < WIDTH; j++) {
            PART(tile_a[k + j][m / WIDTH], m % WIDTH) = PART(staged_a[i], j);
        }
    }
    for (int i = 0; i < LOADS_B; i++) {
        int e = lane + 256 * i;
        tile_b[e / (TILE_N / WIDTH)][e % (TILE_N / WIDTH)] = staged_b[i];
    }
}

void main() {
    int batch = int(gl_WorkGroupID.z);
    int row0 = int(gl_WorkGroupID.y) * TILE_M;
    int col0 = int(gl_WorkGroupID.x) * TILE_N;
    int tx = int(gl_LocalInvocationID.x);
    int ty = int(gl_LocalInvocationID.y);
    int lane = ty * 16 + tx;
    VEC acc[GROUPS_M * WIDTH][GROUPS_N];
    for (int r = 0; r < GROUPS_M * WIDTH; r++) {
        for (int h = 0; h < GROUPS_N; h++) {
            acc[r][h] = VEC(0.0);
        }
    }
    fetch(lane, batch, row0, col0, 0);
    for (int k0 = 0; k0 < K; k0 += TILE_K) {
        stage(lane);
        barrier();
        if (k0 + TILE_K < K) {
            fetch(lane, batch, row0, col0, k0 + TILE_K);
        }
        for (int k = 0; k < TILE_K; k++) {
            VEC a[GROUPS_M];
            VEC b[GROUPS_N];
            for (int g = 0; g < GROUPS_M; g++) {
                a[g] = tile_a[k][g * 16 + ty];
            }
            for (int h = 0; h < GROUPS_N; h++) {
                b[h] = tile_b[k][h * 16 + tx];
            }
            for (int g = 0; g < GROUPS_M; g++) {
                for (int i = 0; i < WIDTH; i++) {
                    for (int h = 0; h < GROUPS_N; h++) {
                        acc[g * WIDTH + i][h] += PART(a[g], i) * b[h];
                    }
                }
            }
        }
        barrier();
    }
    ${PROLOGUE}
    for (int g = 0; g < GROUPS_M; g++) {
        for (int i = 0; i < WIDTH; i++) {
            int row = row0 + (g * 16 + ty) * WIDTH + i;
            for (int h = 0; h < GROUPS_N; h++) {
                for (int c = 0; c < WIDTH; c++) {
                    int col = col0 + (h * 16 + tx) * WIDTH + c;
                    if (row < M && col < N) {
                        store_output((batch * M + row) * N + col, PART(acc[g * WIDTH + i][h], c));
                    }
                }
            }
        }
    }
}
