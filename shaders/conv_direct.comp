#version 450
// ${NAME}: ${BATCH} x (${M} x ${K}) @ (${K} x ${N}), a direct ${KH} x ${KW} convolution of ${CHANNELS} channels; stores ${STORES}
// A CPU driver's convolution (stride and dilation 1) without the matmul's per-element window
// arithmetic: each thread computes BLOCK_M output channels x ROWS output rows x the whole output
// width (at most 32 columns). For each input channel it loads the ROWS + KH - 1 padded input rows those outputs read,
// each element once, and multiplies it into every output and tap that reads it (the matmul loads
// an input element once per tap, dividing its index by the window's sizes). The weights come one
// by one: fetching them as vec4s needs the channel loop unrolled by 4 (3 x 3 windows), which on
// lavapipe was 5-12% faster and took 2.5x as long to compile. `load_input` reads
// the padded input through the matmul's right operand (padding and fused ops included) at a
// window and position that add up to the row and column. All loops but the one over channels
// have constant trip counts of at most 32 and index an array of that length with their counter
// (Mesa then unrolls them whatever their size; lavapipe unrolls no loop of more than 32 trips), so
// the blocks live in registers. The grid has exactly the
// workgroups that have work (lavapipe gives each of its threads a contiguous share of the grid:
// empty workgroups at its end would leave a core idle).
layout(local_size_x = ${LOCAL_SIZE}) in;

const int M = ${M};
const int CHANNELS = ${CHANNELS};
const int KH = ${KH};
const int KW = ${KW};
const int OUT_H = ${OUT_H};
const int OUT_W = ${OUT_W};
const int IN_H = OUT_H + KH - 1;
const int IN_W = OUT_W + KW - 1;
const int BLOCK_M = ${BLOCK_M};
const int ROWS = ${ROWS};
const int BLOCKS_M = (M + BLOCK_M - 1) / BLOCK_M;
const int BLOCKS_Y = (OUT_H + ROWS - 1) / ROWS;
#define STORE_QUADS ${STORE_QUADS}

${BUFFERS}
${HELPERS}
${FUNCTIONS}
float load_input(int batch, int channel, int y, int x) {
    int oy = min(y, OUT_H - 1);
    int ox = min(x, OUT_W - 1);
    return load_b(batch, channel, y - oy, x - ox, oy, ox);
}

void main() {
    int lane = int((gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * ${LOCAL_SIZE}u + gl_LocalInvocationID.x);
    if (lane >= ${BATCH} * BLOCKS_M * BLOCKS_Y) {
        return;
    }
    int batch = lane / (BLOCKS_M * BLOCKS_Y);
    int m0 = lane / BLOCKS_Y % BLOCKS_M * BLOCK_M;
    int y0 = lane % BLOCKS_Y * ROWS;
    float acc[BLOCK_M][ROWS][OUT_W];
    for (int m = 0; m < BLOCK_M; m++) {
        for (int r = 0; r < ROWS; r++) {
            for (int x = 0; x < OUT_W; x++) {
                acc[m][r][x] = 0.0;
            }
        }
    }
    for (int c = 0; c < CHANNELS; c++) {
        float w[BLOCK_M][KH][KW];
        for (int m = 0; m < BLOCK_M; m++) {
            int row = min(m0 + m, M - 1);
            for (int ky = 0; ky < KH; ky++) {
                for (int kx = 0; kx < KW; kx++) {
                    w[m][ky][kx] = load_a(batch, row, (c * KH + ky) * KW + kx);
                }
            }
        }
        float v[ROWS + KH - 1][IN_W];
        for (int i = 0; i < ROWS + KH - 1; i++) {
            int y = min(y0 + i, IN_H - 1);
            for (int x = 0; x < IN_W; x++) {
                v[i][x] = load_input(batch, c, y, x);
            }
        }
        for (int ky = 0; ky < KH; ky++) {
            for (int m = 0; m < BLOCK_M; m++) {
                for (int r = 0; r < ROWS; r++) {
                    for (int x = 0; x < OUT_W; x++) {
                        float sum = acc[m][r][x];
                        for (int kx = 0; kx < KW; kx++) {
                            sum += w[m][ky][kx] * v[r + ky][x + kx];
                        }
                        acc[m][r][x] = sum;
                    }
                }
            }
        }
    }
    ${PROLOGUE}
    int last = min(ROWS, OUT_H - y0) * OUT_W;
    for (int m = 0; m < BLOCK_M; m++) {
        int start = ((batch * M + m0 + m) * OUT_H + y0) * OUT_W;
        bool inside = m0 + m < M;
        for (int r = 0; r < ROWS; r++) {
            for (int x = 0; x < OUT_W; x++) {
                int p = r * OUT_W + x;
#if STORE_QUADS
                if (p % 4 == 3 && inside && p < last) {
                    vec4 quad = vec4(acc[m][(p - 3) / OUT_W][(p - 3) % OUT_W], acc[m][(p - 2) / OUT_W][(p - 2) % OUT_W],
                                     acc[m][(p - 1) / OUT_W][(p - 1) % OUT_W], acc[m][r][x]);
                    store_quad(start + p - 3, quad);
                }
#else
                if (inside && p < last) {
                    store_output(start + p, acc[m][r][x]);
                }
#endif
            }
        }
    }
}
