#version 450
#extension GL_KHR_shader_subgroup_shuffle : enable
// ${NAME}: ${BATCH} x (${M} x ${K}) @ (${K} x ${N}); stores ${STORES}
// matmul for CPU drivers, where a workgroup is one subgroup (the SIMD width, LANES) and a lane's
// loads cost what many FMAs do. A workgroup computes LANES rows x 4 * LANES columns; each lane
// owns four columns of every row. For each LANES x LANES slice of A, every lane loads LANES of
// its elements as PARTS vec4s (fetch_part) and A_VALUE hands each lane the element it needs by a
// subgroup shuffle: A is loaded once per workgroup, not once per lane. Only the last slice, where
// K is not a multiple of LANES, checks for the end of K (a branch in every slice costs lavapipe
// nearly half its speed). B comes as vec4s (fetch_slice). N is a multiple of 4, so a lane's four
// columns are all inside N or all past it, and store_quad stores them together. With ROWS_FIRST, tiles
// go down the rows first, so that a strip of B (four times the bytes of a tile's rows of A) stays in
// cache for the next tile where it is short; otherwise along the columns, keeping the rows of A.
layout(local_size_x = ${LANES}) in;

const int M = ${M};
const int N = ${N};
const int K = ${K};
const int LANES = ${LANES};
const int PARTS = LANES / 4;
const int TILES_M = (M + LANES - 1) / LANES;
const int TILES_N = (N + 4 * LANES - 1) / (4 * LANES);
const int PER_GROUP = ${PER_GROUP};
#define ROWS_FIRST ${ROWS_FIRST}

${BUFFERS}
${HELPERS}
${FUNCTIONS}
void step(inout vec4 acc[LANES], int batch, int row0, int k0, int lane, int col, bool tail) {
    vec4 part[PARTS];
    for (int q = 0; q < PARTS; q++) {
        part[q] = fetch_part(batch, row0, k0, lane, q, tail);
    }
    vec4 b[LANES];
    fetch_slice(batch, k0, col, tail, b);
    for (int r = 0; r < LANES; r++) {
        vec4 sum = acc[r];
        for (int j = 0; j < LANES; j++) {
            sum += A_VALUE(part, r, j) * b[j];
        }
        acc[r] = sum;
    }
}

void tile_product(int tile, int lane) {
    int batch = tile / (TILES_M * TILES_N);
#if ROWS_FIRST
    int row0 = tile % TILES_M * LANES;
    int col = tile / TILES_M % TILES_N * 4 * LANES + 4 * lane;
#else
    int row0 = tile / TILES_N % TILES_M * LANES;
    int col = tile % TILES_N * 4 * LANES + 4 * lane;
#endif
    vec4 acc[LANES];
    for (int r = 0; r < LANES; r++) {
        acc[r] = vec4(0.0);
    }
    for (int k0 = 0; k0 < K - K % LANES; k0 += LANES) {
        step(acc, batch, row0, k0, lane, col, false);
    }
    if (K % LANES != 0) {
        step(acc, batch, row0, K - K % LANES, lane, col, true);
    }
    for (int r = 0; r < LANES; r++) {
        int row = row0 + r;
        if (row < M && col < N) {
            store_quad((batch * M + row) * N + col, acc[r]);
        }
    }
}

void main() {
    int group = int(gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x);
    int lane = int(gl_LocalInvocationID.x);
    ${PROLOGUE}
    for (int tile = group * PER_GROUP; tile < min(group * PER_GROUP + PER_GROUP, ${BATCH} * TILES_M * TILES_N); tile++) {
        tile_product(tile, lane);
    }
}
