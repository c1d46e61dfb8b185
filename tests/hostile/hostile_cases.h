/* SPDX-License-Identifier: MIT */
/*
 * hostile_cases.h - the table of hostile cases (hostile_cases.c).
 */
#ifndef FERRY_TEST_HOSTILE_CASES_H
#define FERRY_TEST_HOSTILE_CASES_H

#include <stddef.h>
#include <stdint.h>

struct ctx;

#define INPROC 0x1   /* needs the in-process fake VMM (its state handling) */
#define SUCCEEDS 0x2 /* the migration must complete */

struct hcase {
	const char *name;
	void (*fn)(struct ctx *c);
	unsigned flags;
	const char *todo; /* expected to fail until the lead decides */
};

/* The framing cases (hostile_framing.c). */
void c_stream_magic(struct ctx *c);
void c_stream_version(struct ctx *c);
void c_stream_flags(struct ctx *c);
void c_stream_checksum(struct ctx *c);
void c_mem_region_index(struct ctx *c);
void c_mem_region_huge(struct ctx *c);
void c_mem_offset_past_end(struct ctx *c);
void c_mem_offset_at_end(struct ctx *c);
void c_mem_tail_past_end(struct ctx *c);
void c_mem_offset_wraps(struct ctx *c);
void c_mem_length_wraps(struct ctx *c);
void c_mem_length_4gib(struct ctx *c);
void c_mem_length_longer(struct ctx *c);
void c_mem_length_shorter(struct ctx *c);
void c_mem_unaligned_offset(struct ctx *c);
void c_mem_unaligned_length(struct ctx *c);
void c_mem_unknown_flags(struct ctx *c);
void c_mem_too_short(struct ctx *c);
void c_rec_length_4gib(struct ctx *c);
void c_rec_length_over_max(struct ctx *c);
void c_rec_unknown_flag(struct ctx *c);
void c_rec_csum_head_on_control(struct ctx *c);
void c_rec_type_zero(struct ctx *c);
void c_cut_stream_header(struct ctx *c);
void c_cut_record_header(struct ctx *c);
void c_cut_control_body(struct ctx *c);
void c_cut_before_trailer(struct ctx *c);
void c_cut_in_trailer(struct ctx *c);
void c_cut_mem_header(struct ctx *c);
void c_cut_mem_data(struct ctx *c);
void c_cut_mem_trailer(struct ctx *c);
void c_csum_header(struct ctx *c);
void c_csum_body(struct ctx *c);
void c_csum_trailer(struct ctx *c);
void c_csum_mem_header(struct ctx *c);
void c_csum_mem_data(struct ctx *c);
void c_csum_mem_trailer(struct ctx *c);
void c_csum_optional(struct ctx *c);
void c_padding_control(struct ctx *c);
void c_padding_optional(struct ctx *c);
void c_zmap_bits_past_range(struct ctx *c);
void c_zmap_payload_mismatch(struct ctx *c);
void c_zmap_missing(struct ctx *c);
void c_zmap_valid_then_error(struct ctx *c);
void c_codec_unknown(struct ctx *c);
void c_lz4_garbage(struct ctx *c);
void c_lz4_unpacks_too_long(struct ctx *c);
void c_lz4_cut_payload(struct ctx *c);
void c_zstd_unpacks_too_long(struct ctx *c);
void c_zstd_cut_payload(struct ctx *c);
void c_packed_not_smaller(struct ctx *c);
void c_zstd_valid_then_error(struct ctx *c);

/* Extra data connections (hostile_cases.c), shared with the cases about
 * strangers (hostile_strangers.c). */
struct fy_buf;
struct fy_pass_conn;
struct ctx *data_connect(struct ctx *c);
struct ctx *data_open(struct ctx *c);
void data_close(struct ctx *c, struct ctx *d);
void b_pass_end_conns(struct fy_buf *b, uint32_t seq, uint32_t pass,
		      const struct fy_pass_conn *e, uint32_t n);
void put_pass_end_conns(struct ctx *c, const struct fy_pass_conn *e,
			uint32_t n);

/* Strangers on the destination's port during a migration
 * (hostile_strangers.c). */
void c_stranger_garbage(struct ctx *c);
void c_stranger_join_bad_checksum(struct ctx *c);
void c_stranger_join_index_0(struct ctx *c);
void c_stranger_join_index_out_of_range(struct ctx *c);
void c_stranger_join_other_channel_count(struct ctx *c);
void c_stranger_join_wrong_token(struct ctx *c);
void c_stranger_join_replayed(struct ctx *c);
void c_stranger_join_long_body(struct ctx *c);
void c_stranger_silent(struct ctx *c);
void c_stranger_silent_flood(struct ctx *c);

/* Local migration by fds (hostile_local.c). */
void c_memory_fds_without_fds(struct ctx *c);
void c_memory_fds_pipe(struct ctx *c);
void c_memory_fds_short_file(struct ctx *c);
void c_memory_fds_other_size(struct ctx *c);
void c_memory_fds_short_body(struct ctx *c);
void c_memory_fds_in_pass(struct ctx *c);

extern const struct hcase hostile_cases[];
extern const size_t hostile_ncases;

#endif /* FERRY_TEST_HOSTILE_CASES_H */
